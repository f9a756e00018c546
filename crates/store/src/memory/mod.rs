//! The in-memory engine: every trait on plain maps behind one mutex.
//!
//! It is the reference implementation of the traits (the shared suite runs on it first), the
//! double for unit tests, and `--engine memory` for throwaway runs. Nothing survives a restart.
//! A std mutex is right here: no critical section awaits, and each is a few map operations.

mod streams;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::cache::{CacheEntry, CachePut, CacheStore};
use crate::objects::{AlarmRecord, ObjectStore};
use crate::sessions::{Cas, SessionRecord, SessionStore};
use crate::{Durability, EngineAdmin, Millis, Result, StoreError};

#[derive(Default)]
struct State {
    closed: bool,
    sessions: HashMap<String, SessionRecord>,
    /// namespace -> key -> entry
    cache: BTreeMap<String, BTreeMap<String, CacheEntry>>,
    /// (kind, key) -> state
    objects: BTreeMap<(String, String), Vec<u8>>,
    /// (kind, key, name) -> alarm
    alarms: BTreeMap<(String, String, String), AlarmRecord>,
    /// path -> stream
    streams: BTreeMap<String, streams::MemoryStream>,
}

/// In-memory engine.
#[derive(Default)]
pub struct MemoryEngine {
    state: Mutex<State>,
}

impl MemoryEngine {
    /// A new, empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T> {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.closed {
            return Err(StoreError::Unavailable("engine closed".into()));
        }
        Ok(f(&mut guard))
    }
}

fn live_session<'a>(s: &'a State, id: &str, now: Millis) -> Option<&'a SessionRecord> {
    s.sessions.get(id).filter(|r| !r.is_expired(now))
}

fn live_entries(ns: &BTreeMap<String, CacheEntry>, now: Millis) -> usize {
    ns.values().filter(|e| !e.is_expired(now)).count()
}

#[async_trait]
impl SessionStore for MemoryEngine {
    async fn insert_session(&self, record: &SessionRecord, _: Durability) -> Result<bool> {
        self.with(|s| {
            if live_session(s, &record.id, record.created_at).is_some() {
                return false;
            }
            s.sessions.insert(record.id.clone(), record.clone());
            true
        })
    }

    async fn get_session(&self, id: &str, now: Millis) -> Result<Option<SessionRecord>> {
        self.with(|s| live_session(s, id, now).cloned())
    }

    async fn replace_session(
        &self,
        record: &SessionRecord,
        expected_version: u64,
        now: Millis,
        _: Durability,
    ) -> Result<Cas> {
        self.with(|s| match live_session(s, &record.id, now) {
            None => Cas::Missing,
            Some(old) if old.version != expected_version => Cas::VersionMismatch,
            Some(old) => {
                let mut new = record.clone();
                new.user_id = old.user_id.clone();
                s.sessions.insert(new.id.clone(), new);
                Cas::Written
            }
        })
    }

    async fn touch_session(
        &self,
        id: &str,
        idle_expires_at: Millis,
        last_seen_at: Millis,
        now: Millis,
        _: Durability,
    ) -> Result<bool> {
        self.with(
            |s| match s.sessions.get_mut(id).filter(|r| !r.is_expired(now)) {
                None => false,
                Some(r) => {
                    r.idle_expires_at = r.idle_expires_at.max(idle_expires_at);
                    r.last_seen_at = r.last_seen_at.max(last_seen_at);
                    true
                }
            },
        )
    }

    async fn delete_session(&self, id: &str, now: Millis, _: Durability) -> Result<bool> {
        self.with(|s| s.sessions.remove(id).is_some_and(|r| !r.is_expired(now)))
    }

    async fn list_user_sessions(
        &self,
        user_id: &str,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<SessionRecord>> {
        self.with(|s| {
            let mut list: Vec<SessionRecord> = s
                .sessions
                .values()
                .filter(|r| r.user_id.as_deref() == Some(user_id) && !r.is_expired(now))
                .cloned()
                .collect();
            list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            list.truncate(limit);
            list
        })
    }

    async fn delete_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: Millis,
        _: Durability,
    ) -> Result<Vec<String>> {
        self.with(|s| {
            let doomed: Vec<String> = s
                .sessions
                .values()
                .filter(|r| r.user_id.as_deref() == Some(user_id) && Some(r.id.as_str()) != except)
                .map(|r| r.id.clone())
                .collect();
            let mut deleted = Vec::new();
            for id in doomed {
                if s.sessions.remove(&id).is_some_and(|r| !r.is_expired(now)) {
                    deleted.push(id);
                }
            }
            deleted.sort();
            deleted
        })
    }

    async fn sweep_sessions(&self, now: Millis, batch: usize) -> Result<usize> {
        self.with(|s| {
            let doomed: Vec<String> = s
                .sessions
                .values()
                .filter(|r| r.is_expired(now))
                .take(batch)
                .map(|r| r.id.clone())
                .collect();
            for id in &doomed {
                s.sessions.remove(id);
            }
            doomed.len()
        })
    }
}

#[async_trait]
impl CacheStore for MemoryEngine {
    async fn cache_get(&self, ns: &str, key: &str, now: Millis) -> Result<Option<CacheEntry>> {
        self.with(|s| {
            s.cache
                .get(ns)
                .and_then(|m| m.get(key))
                .filter(|e| !e.is_expired(now))
                .cloned()
        })
    }

    async fn cache_put(
        &self,
        ns: &str,
        key: &str,
        entry: &CacheEntry,
        max_namespaces: usize,
        now: Millis,
        _: Durability,
    ) -> Result<CachePut> {
        self.with(|s| {
            let namespace_live = s.cache.get(ns).is_some_and(|m| live_entries(m, now) > 0);
            if !namespace_live {
                let live = s
                    .cache
                    .values()
                    .filter(|m| live_entries(m, now) > 0)
                    .count();
                if live >= max_namespaces {
                    return CachePut::NamespaceLimit;
                }
            }
            s.cache
                .entry(ns.to_string())
                .or_default()
                .insert(key.to_string(), entry.clone());
            CachePut::Stored
        })
    }

    async fn cache_delete(&self, ns: &str, key: &str, now: Millis, _: Durability) -> Result<bool> {
        self.with(|s| {
            s.cache
                .get_mut(ns)
                .and_then(|m| m.remove(key))
                .is_some_and(|e| !e.is_expired(now))
        })
    }

    async fn cache_clear(&self, ns: &str, now: Millis, _: Durability) -> Result<u64> {
        self.with(|s| {
            s.cache
                .remove(ns)
                .map(|m| live_entries(&m, now) as u64)
                .unwrap_or(0)
        })
    }

    async fn sweep_cache(&self, now: Millis, batch: usize) -> Result<usize> {
        self.with(|s| {
            let mut removed = 0;
            for m in s.cache.values_mut() {
                let doomed: Vec<String> = m
                    .iter()
                    .filter(|(_, e)| e.is_expired(now))
                    .take(batch - removed)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    m.remove(&k);
                    removed += 1;
                }
                if removed >= batch {
                    break;
                }
            }
            s.cache.retain(|_, m| !m.is_empty());
            removed
        })
    }
}

#[async_trait]
impl ObjectStore for MemoryEngine {
    async fn load_object(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.with(|s| s.objects.get(&(kind.to_string(), key.to_string())).cloned())
    }

    async fn save_object(&self, kind: &str, key: &str, state: &[u8], _: Durability) -> Result<()> {
        self.with(|s| {
            s.objects
                .insert((kind.to_string(), key.to_string()), state.to_vec());
        })
    }

    async fn delete_object(&self, kind: &str, key: &str, _: Durability) -> Result<bool> {
        self.with(|s| {
            s.alarms.retain(|(k, o, _), _| !(k == kind && o == key));
            s.objects
                .remove(&(kind.to_string(), key.to_string()))
                .is_some()
        })
    }

    async fn list_objects(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.with(|s| {
            s.objects
                .keys()
                .filter(|(k, key)| {
                    k == kind && key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a)
                })
                .take(limit)
                .map(|(_, key)| key.clone())
                .collect()
        })
    }

    async fn put_alarm(&self, alarm: &AlarmRecord, _: Durability) -> Result<()> {
        self.with(|s| {
            let id = (alarm.kind.clone(), alarm.key.clone(), alarm.name.clone());
            s.alarms.insert(id, alarm.clone());
        })
    }

    async fn delete_alarm(
        &self,
        kind: &str,
        key: &str,
        name: &str,
        due_at: Option<Millis>,
        _: Durability,
    ) -> Result<bool> {
        self.with(|s| {
            let id = (kind.to_string(), key.to_string(), name.to_string());
            match s.alarms.get(&id) {
                Some(a) if due_at.is_none_or(|d| d == a.due_at) => {
                    s.alarms.remove(&id);
                    true
                }
                _ => false,
            }
        })
    }

    async fn reschedule_alarm(
        &self,
        alarm: &AlarmRecord,
        expected_due_at: Millis,
        _: Durability,
    ) -> Result<bool> {
        self.with(|s| {
            let id = (alarm.kind.clone(), alarm.key.clone(), alarm.name.clone());
            match s.alarms.get_mut(&id) {
                Some(current) if current.due_at == expected_due_at => {
                    *current = alarm.clone();
                    true
                }
                _ => false,
            }
        })
    }

    async fn object_alarms(&self, kind: &str, key: &str) -> Result<Vec<AlarmRecord>> {
        self.with(|s| {
            s.alarms
                .values()
                .filter(|a| a.kind == kind && a.key == key)
                .cloned()
                .collect()
        })
    }

    async fn due_alarms(&self, until: Millis, limit: usize) -> Result<Vec<AlarmRecord>> {
        self.with(|s| {
            let mut due: Vec<AlarmRecord> = s
                .alarms
                .values()
                .filter(|a| a.due_at <= until)
                .cloned()
                .collect();
            due.sort_by(|a, b| {
                (a.due_at, &a.kind, &a.key, &a.name).cmp(&(b.due_at, &b.kind, &b.key, &b.name))
            });
            due.truncate(limit);
            due
        })
    }

    async fn next_alarm_at(&self) -> Result<Option<Millis>> {
        self.with(|s| s.alarms.values().map(|a| a.due_at).min())
    }
}

#[async_trait]
impl EngineAdmin for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn exclusive(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<()> {
        self.with(|_| ())
    }

    async fn close(&self) -> Result<()> {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.closed = true;
        Ok(())
    }
}
