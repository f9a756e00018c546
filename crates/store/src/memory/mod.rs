//! The in-memory engine: every trait on plain maps behind one mutex.
//!
//! It is the reference implementation of the traits (the shared suite runs on it first), the
//! double for unit tests, and `--engine memory` for throwaway runs. Nothing survives a restart.
//! A std mutex is right here: no critical section awaits, and each is a few map operations.

mod bus;
mod erasures;
mod presence;
mod sessions;
mod streams;

pub use bus::MemoryBus;
pub use presence::MemoryPresence;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::cache::{CacheEntry, CachePut, CacheStore};
use crate::objects::{AlarmRecord, ObjectStore};
use crate::sessions::SessionRecord;
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
    alarms: BTreeMap<AlarmId, AlarmRecord>,
    /// The same alarms ordered by (due, kind, key, name): the next and the due ones are read
    /// from its front instead of scanning every alarm (a scan made each new middleware client
    /// cost O(clients) once the runtime re-read the next due time).
    alarms_by_due: BTreeSet<(Millis, AlarmId)>,
    /// path -> stream
    streams: BTreeMap<String, streams::MemoryStream>,
    /// user hash -> erased at
    erasures: HashMap<String, Millis>,
    /// Queued outbox events by their sequence number.
    outbox: BTreeMap<u64, Vec<u8>>,
    /// The last outbox sequence number handed out.
    outbox_seq: u64,
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

/// (kind, key, name) of an alarm.
type AlarmId = (String, String, String);

fn alarm_id(alarm: &AlarmRecord) -> AlarmId {
    (alarm.kind.clone(), alarm.key.clone(), alarm.name.clone())
}

impl State {
    /// Inserts or replaces an alarm, keeping the due-time index in step.
    fn put_alarm(&mut self, alarm: AlarmRecord) {
        let id = alarm_id(&alarm);
        self.alarms_by_due.insert((alarm.due_at, id.clone()));
        if let Some(old) = self.alarms.insert(id.clone(), alarm) {
            let new_due = self.alarms.get(&id).map(|a| a.due_at);
            if new_due != Some(old.due_at) {
                self.alarms_by_due.remove(&(old.due_at, id));
            }
        }
    }

    /// Removes an alarm and its index entry.
    fn remove_alarm(&mut self, id: &AlarmId) -> Option<AlarmRecord> {
        let removed = self.alarms.remove(id)?;
        self.alarms_by_due.remove(&(removed.due_at, id.clone()));
        Some(removed)
    }

    /// Ids of every alarm of one object (a range of the ordered map, not a scan).
    fn object_alarm_ids(&self, kind: &str, key: &str) -> Vec<AlarmId> {
        let start = (kind.to_string(), key.to_string(), String::new());
        self.alarms
            .range(start..)
            .take_while(|((k, o, _), _)| k == kind && o == key)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn live_entries(ns: &BTreeMap<String, CacheEntry>, now: Millis) -> usize {
    ns.values().filter(|e| !e.is_expired(now)).count()
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
                let class = crate::reserved_namespace(ns);
                let live = s
                    .cache
                    .iter()
                    .filter(|(name, _)| crate::reserved_namespace(name) == class)
                    .filter(|(_, m)| live_entries(m, now) > 0)
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

    async fn swap_object(
        &self,
        kind: &str,
        key: &str,
        expected: Option<&[u8]>,
        state: Option<&[u8]>,
        _: Durability,
    ) -> Result<bool> {
        self.with(|s| {
            let id = (kind.to_string(), key.to_string());
            if s.objects.get(&id).map(Vec::as_slice) != expected {
                return false;
            }
            match state {
                Some(state) => s.objects.insert(id, state.to_vec()),
                None => s.objects.remove(&id),
            };
            true
        })
    }

    async fn delete_object(&self, kind: &str, key: &str, _: Durability) -> Result<bool> {
        self.with(|s| {
            for id in s.object_alarm_ids(kind, key) {
                s.remove_alarm(&id);
            }
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
        self.with(|s| s.put_alarm(alarm.clone()))
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
                    s.remove_alarm(&id);
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
        self.with(|s| match s.alarms.get(&alarm_id(alarm)) {
            Some(current) if current.due_at == expected_due_at => {
                s.put_alarm(alarm.clone());
                true
            }
            _ => false,
        })
    }

    async fn object_alarms(&self, kind: &str, key: &str) -> Result<Vec<AlarmRecord>> {
        self.with(|s| {
            s.object_alarm_ids(kind, key)
                .iter()
                .filter_map(|id| s.alarms.get(id).cloned())
                .collect()
        })
    }

    async fn due_alarms(&self, until: Millis, limit: usize) -> Result<Vec<AlarmRecord>> {
        self.with(|s| {
            s.alarms_by_due
                .iter()
                .take_while(|(due_at, _)| *due_at <= until)
                .take(limit)
                .filter_map(|(_, id)| s.alarms.get(id).cloned())
                .collect()
        })
    }

    async fn next_alarm_at(&self) -> Result<Option<Millis>> {
        self.with(|s| s.alarms_by_due.first().map(|(due_at, _)| *due_at))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(key: &str, name: &str, due_at: Millis) -> AlarmRecord {
        AlarmRecord {
            kind: "k".into(),
            key: key.into(),
            name: name.into(),
            due_at,
            attempt: 0,
            payload: String::new(),
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        #[allow(clippy::expect_used)]
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// The due-time index follows every way an alarm changes.
    #[test]
    fn alarm_index_tracks_puts_reschedules_and_deletes() {
        let engine = MemoryEngine::new();
        let due = |until| {
            block_on(engine.due_alarms(until, 10))
                .unwrap_or_default()
                .into_iter()
                .map(|a| (a.key, a.due_at))
                .collect::<Vec<_>>()
        };
        let next = || block_on(engine.next_alarm_at()).ok().flatten();
        let put = |a: AlarmRecord| block_on(engine.put_alarm(&a, Durability::Confirmed));
        assert!(put(alarm("b", "t", 30)).is_ok());
        assert!(put(alarm("a", "t", 20)).is_ok());
        assert!(put(alarm("c", "t", 20)).is_ok());
        assert_eq!(next(), Some(20));
        assert_eq!(due(25), vec![("a".into(), 20), ("c".into(), 20)]);
        // Replacing an alarm moves it in the index (no stale entry left at 20).
        assert!(put(alarm("a", "t", 40)).is_ok());
        assert_eq!(
            due(100),
            vec![("c".into(), 20), ("b".into(), 30), ("a".into(), 40)]
        );
        let moved =
            block_on(engine.reschedule_alarm(&alarm("c", "t", 50), 20, Durability::Confirmed));
        assert_eq!(moved.ok(), Some(true));
        assert_eq!(next(), Some(30));
        let stale =
            block_on(engine.reschedule_alarm(&alarm("c", "t", 60), 20, Durability::Confirmed));
        assert_eq!(stale.ok(), Some(false));
        let deleted = block_on(engine.delete_alarm("k", "b", "t", Some(30), Durability::Confirmed));
        assert_eq!(deleted.ok(), Some(true));
        assert_eq!(due(100), vec![("a".into(), 40), ("c".into(), 50)]);
        assert_eq!(
            block_on(engine.delete_object("k", "a", Durability::Confirmed)).ok(),
            Some(false)
        );
        assert_eq!(due(100), vec![("c".into(), 50)]);
        assert_eq!(
            block_on(engine.object_alarms("k", "c"))
                .map(|v| v.len())
                .ok(),
            Some(1)
        );
        assert_eq!(due(100).len(), 1);
        assert!(block_on(engine.delete_alarm("k", "c", "t", None, Durability::Confirmed)).is_ok());
        assert_eq!(next(), None);
    }
}
