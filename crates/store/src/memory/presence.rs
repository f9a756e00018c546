//! The in-process [`PresenceStore`]: the reference for the Redis engine's scripts (same
//! leases, same transitions) in the shared suite. One mutex, since every operation is a few
//! map edits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::presence::{Expired, Joined, Left, PresenceMember, PresenceStore};
use crate::{Millis, Result};

#[derive(Default)]
struct Set {
    /// id -> (expires at, info)
    members: BTreeMap<String, (Millis, String)>,
    /// Last transition's state and generation, and the last settled state.
    online: bool,
    generation: u64,
    settled_online: bool,
}

impl Set {
    /// Drops expired members; returns them.
    fn expire(&mut self, now: Millis) -> Vec<PresenceMember> {
        let dead: Vec<String> = self
            .members
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        dead.into_iter()
            .filter_map(|id| {
                let (_, info) = self.members.remove(&id)?;
                Some(PresenceMember { id, info })
            })
            .collect()
    }

    /// Records "went empty" if it did; returns the generation.
    fn went_offline(&mut self) -> Option<u64> {
        if self.members.is_empty() && self.online {
            self.online = false;
            self.generation += 1;
            return Some(self.generation);
        }
        None
    }
}

/// The in-process [`PresenceStore`].
#[derive(Default)]
pub struct MemoryPresence {
    sets: Mutex<HashMap<String, Set>>,
}

impl MemoryPresence {
    /// No sets.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Set>> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn join(
        &self,
        set: &str,
        member: &PresenceMember,
        now: Millis,
        ttl_ms: Millis,
        limit: usize,
    ) -> Result<Joined> {
        let mut sets = self.lock();
        let s = sets.entry(set.to_string()).or_default();
        s.expire(now);
        let present = s.members.contains_key(&member.id);
        if !present && s.members.len() >= limit {
            return Ok(Joined {
                admitted: false,
                live: s.members.len(),
                online: None,
            });
        }
        s.members
            .insert(member.id.clone(), (now + ttl_ms, member.info.clone()));
        let online = (!s.online).then(|| {
            s.online = true;
            s.generation += 1;
            s.generation
        });
        Ok(Joined {
            admitted: true,
            live: s.members.len(),
            online,
        })
    }

    async fn leave(&self, set: &str, id: &str, now: Millis) -> Result<Left> {
        let mut sets = self.lock();
        let Some(s) = sets.get_mut(set) else {
            return Ok(Left {
                live: 0,
                offline: None,
            });
        };
        s.members.remove(id);
        s.expire(now);
        Ok(Left {
            live: s.members.len(),
            offline: s.went_offline(),
        })
    }

    async fn refresh(
        &self,
        members: &[(String, PresenceMember)],
        now: Millis,
        ttl_ms: Millis,
    ) -> Result<Vec<(String, String)>> {
        let mut sets = self.lock();
        let mut missing = Vec::new();
        for (set, member) in members {
            match sets
                .get_mut(set)
                .and_then(|s| s.members.get_mut(&member.id))
            {
                Some(slot) => *slot = (now + ttl_ms, member.info.clone()),
                None => missing.push((set.clone(), member.id.clone())),
            }
        }
        Ok(missing)
    }

    async fn members(&self, set: &str, now: Millis) -> Result<Vec<PresenceMember>> {
        let sets = self.lock();
        Ok(sets.get(set).map_or_else(Vec::new, |s| {
            s.members
                .iter()
                .filter(|(_, (at, _))| *at > now)
                .map(|(id, (_, info))| PresenceMember {
                    id: id.clone(),
                    info: info.clone(),
                })
                .collect()
        }))
    }

    async fn member(&self, set: &str, id: &str, now: Millis) -> Result<Option<String>> {
        let sets = self.lock();
        Ok(sets
            .get(set)
            .and_then(|s| s.members.get(id))
            .filter(|(at, _)| *at > now)
            .map(|(_, info)| info.clone()))
    }

    async fn sweep(&self, now: Millis, max_sets: usize) -> Result<Vec<Expired>> {
        let mut sets = self.lock();
        let mut out = Vec::new();
        for (name, s) in sets.iter_mut() {
            if out.len() >= max_sets {
                break;
            }
            let members = s.expire(now);
            if members.is_empty() {
                continue;
            }
            out.push(Expired {
                set: name.clone(),
                members,
                offline: s.went_offline(),
            });
        }
        sets.retain(|_, s| !s.members.is_empty() || s.online != s.settled_online);
        Ok(out)
    }

    async fn settle(&self, set: &str, generation: u64, online: bool) -> Result<bool> {
        let mut sets = self.lock();
        let Some(s) = sets.get_mut(set) else {
            return Ok(false);
        };
        if s.generation != generation || s.online != online || s.settled_online == online {
            return Ok(false);
        }
        s.settled_online = online;
        Ok(true)
    }
}
