//! One kind of object ([`ObjectKind`]): per-key locking, idle eviction and listing, and its
//! optional persistence.
//!
//! Durable Objects gives each object a single thread; sessiond gives each `(kind, key)` a
//! `tokio::sync::Mutex`, created on first use and held by the caller across its storage awaits,
//! so a read-modify-write of one key is atomic with respect to every other request for that key
//! while different keys proceed in parallel.
//!
//! The lock table itself (shards of slots, and when a slot may be removed) is `table.rs`.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessiond_store::ObjectStore;
use tokio::time::Instant;

use crate::codec::StateCodec;
use crate::config::RuntimeConfig;
use crate::guard::ObjectGuard;
use crate::table::{KindInner, Persistence, SHARDS};
use crate::RuntimeError;

/// A kind of object (`session`, `client`, `room`…) with in-memory state of type `S` per key.
///
/// Cheap to clone; clones share the table. See the [module docs](self) for the locking design.
pub struct ObjectKind<S> {
    pub(crate) inner: Arc<KindInner<S>>,
}

impl<S> Clone for ObjectKind<S> {
    fn clone(&self) -> Self {
        ObjectKind {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Send + 'static> ObjectKind<S> {
    fn with_persistence(name: impl Into<String>, persistence: Option<Persistence<S>>) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        let idle = RuntimeConfig::default().idle_evict_after.as_millis() as u64;
        ObjectKind {
            inner: Arc::new(KindInner {
                name: name.into(),
                shards,
                hasher: RandomState::new(),
                resident: AtomicUsize::new(0),
                idle_after_ms: AtomicU64::new(idle),
                persistence,
            }),
        }
    }

    /// A kind whose state lives in memory only (lost on eviction and restart).
    pub fn in_memory(name: impl Into<String>) -> Self {
        Self::with_persistence(name, None)
    }

    /// A kind whose state can be loaded from and saved to `store` through `codec`
    /// ([`ObjectGuard::load`], [`ObjectGuard::save`], [`ObjectGuard::delete`]).
    pub fn persistent(
        name: impl Into<String>,
        store: Arc<dyn ObjectStore>,
        codec: impl StateCodec<S>,
    ) -> Self {
        let persistence = Persistence {
            store,
            codec: Box::new(codec),
        };
        Self::with_persistence(name, Some(persistence))
    }

    /// The kind's name, as used in the store, in alarms and in metric labels.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the kind was built with a store and codec.
    pub fn is_persistent(&self) -> bool {
        self.inner.persistence.is_some()
    }

    /// How long an object stays in memory unused before eviction.
    pub fn idle_after(&self) -> Duration {
        self.inner.idle_after()
    }

    /// Changes the idle time (takes effect at the next sweep).
    pub fn set_idle_after(&self, idle: Duration) {
        let ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        self.inner.idle_after_ms.store(ms, Ordering::Relaxed);
    }

    /// Waits for exclusive access to the object `key` (FIFO among waiters) and returns its
    /// guard. Hold the guard across storage awaits to make a read-modify-write atomic; other
    /// keys are not blocked. Cancel-safe: dropping the future gives up the place in line.
    pub async fn lock(&self, key: &str) -> ObjectGuard<S> {
        let slot = self.inner.slot(key);
        let guard = slot.lock_owned().await;
        ObjectGuard::new(self.inner.clone(), key.to_string(), guard)
    }

    /// The guard of `key` if nobody holds or waits for it right now.
    pub fn try_lock(&self, key: &str) -> Option<ObjectGuard<S>> {
        let slot = self.inner.slot(key);
        let guard = slot.try_lock_owned().ok()?;
        Some(ObjectGuard::new(self.inner.clone(), key.to_string(), guard))
    }

    /// Whether `key` currently has an in-memory slot (state cached, or a guard/waiter).
    pub fn is_resident(&self, key: &str) -> bool {
        self.inner.shard(key).contains_key(key)
    }

    /// Number of objects currently in memory.
    pub fn resident_count(&self) -> usize {
        self.inner.resident.load(Ordering::Relaxed)
    }

    /// Drops every object unused for longer than [`idle_after`](Self::idle_after) as of `now`,
    /// skipping any object that is locked or awaited. Returns how many were dropped. The
    /// runtime's sweep task calls this; tests call it directly with a chosen `now`.
    pub fn evict_idle(&self, now: Instant) -> usize {
        crate::eviction::evict_idle(&self.inner, now)
    }

    /// Keys of persisted objects of this kind starting with `prefix`, strictly after `after`,
    /// ascending, at most `limit` (a cursor for paging: pass the last key of the previous page).
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, RuntimeError> {
        let p = self
            .inner
            .persistence
            .as_ref()
            .ok_or_else(|| RuntimeError::NotPersistent(self.inner.name.clone()))?;
        Ok(p.store
            .list_objects(&self.inner.name, prefix, after, limit)
            .await?)
    }
}

impl<S> std::fmt::Debug for ObjectKind<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectKind")
            .field("name", &self.inner.name)
            .field("resident", &self.inner.resident.load(Ordering::Relaxed))
            .field("persistent", &self.inner.persistence.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn empty_slots_are_released_on_drop() {
        let kind = ObjectKind::<u32>::in_memory("t");
        drop(kind.lock("missing").await);
        assert!(!kind.is_resident("missing"));
        assert_eq!(kind.resident_count(), 0);

        let mut g = kind.lock("present").await;
        g.set(1);
        drop(g);
        assert!(kind.is_resident("present"));
        assert_eq!(kind.resident_count(), 1);
    }

    #[tokio::test]
    async fn empty_slot_with_waiter_is_kept() {
        let kind = ObjectKind::<u32>::in_memory("t");
        let g = kind.lock("k").await;
        let k2 = kind.clone();
        let waiter = tokio::spawn(async move {
            let mut g = k2.lock("k").await;
            g.set(7);
        });
        // The waiter clones the slot before waiting; wait until it has.
        while Arc::strong_count(&kind.inner.slot("k")) < 4 {
            tokio::task::yield_now().await;
        }
        drop(g);
        waiter.await.expect("waiter");
        let g = kind.lock("k").await;
        assert_eq!(*g, Some(7));
    }

    #[tokio::test]
    async fn try_lock_fails_while_held() {
        let kind = ObjectKind::<u32>::in_memory("t");
        let g = kind.lock("k").await;
        assert!(kind.try_lock("k").is_none());
        assert!(kind.try_lock("other").is_some());
        drop(g);
        assert!(kind.try_lock("k").is_some());
    }

    #[tokio::test]
    async fn persistence_helpers_need_a_store() {
        let kind = ObjectKind::<u32>::in_memory("t");
        let mut g = kind.lock("k").await;
        assert!(matches!(
            g.save(1, sessiond_store::Durability::Confirmed).await,
            Err(RuntimeError::NotPersistent(_))
        ));
        assert!(g.load().await.expect("memory load").is_none());
        drop(g);
        assert!(kind.list("", None, 10).await.is_err());
    }
}
