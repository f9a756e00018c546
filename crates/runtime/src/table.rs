//! The lock table under an `ObjectKind`: per-key slots in shards, and
//! the rules for adding and removing a slot.
//!
//! The table is a fixed number of shards, each a `std::sync::Mutex<HashMap<key, Arc<slot>>>`.
//! A std mutex is the right tool for the shards: every critical section is a hash lookup, an
//! insert or a removal, never an `.await`, so an async mutex would only add overhead; sharding
//! keeps unrelated keys from contending on one map lock. The per-object mutex is the async one,
//! since its holder awaits storage while holding it.
//!
//! A slot's `Arc` count tells who uses it: the table holds one reference, and every guard and
//! every task waiting in `ObjectKind::lock` holds another (the waiter clones it under the
//! shard lock before it starts waiting). Eviction and the empty-slot cleanup only remove a slot
//! whose count shows nobody else has it, under the shard lock, so a removed slot can never be
//! in use and two live mutexes for one key cannot both be handed out.
//!
//! It sits below everything that works on slots: the guard (load/save/delete and the
//! empty-slot cleanup), the idle sweep, and `ObjectKind`, which hands out guards and runs the
//! sweep; so none of those has to import another to reach the table.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sessiond_store::ObjectStore;
use tokio::time::Instant;

use crate::codec::StateCodec;

/// Number of shards of the lock table. A power of two well above the core count: contention
/// on a shard lock is already rare because each critical section is tiny.
pub(crate) const SHARDS: usize = 32;

/// In-memory part of one object.
pub(crate) struct Slot<S> {
    /// The cached state; `None` when absent or not loaded yet.
    pub(crate) state: Option<S>,
    /// True once `state` reflects the store (loaded, saved or deleted in this residency), so a
    /// `None` means "known absent" rather than "not loaded".
    pub(crate) synced: bool,
    /// The stored bytes as this process last read or wrote them (persistent kinds; `None`
    /// when absent or unknown): what `ObjectGuard::persist_checked` expects to replace.
    pub(crate) stored: Option<Vec<u8>>,
    /// When a guard on this slot was last released (or the slot created).
    pub(crate) last_used: Instant,
}

pub(crate) type SlotRef<S> = Arc<tokio::sync::Mutex<Slot<S>>>;

/// One shard of the lock table.
pub(crate) type Shard<S> = Mutex<HashMap<String, SlotRef<S>>>;

/// The store and codec of a persistent kind.
pub(crate) struct Persistence<S> {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) codec: Box<dyn StateCodec<S>>,
}

/// Shared body of an [`ObjectKind`].
pub(crate) struct KindInner<S> {
    pub(crate) name: String,
    pub(crate) shards: Box<[Shard<S>]>,
    pub(crate) hasher: RandomState,
    /// Slots currently in the table, mirrored into the `sessiond_runtime_objects` gauge.
    pub(crate) resident: AtomicUsize,
    pub(crate) idle_after_ms: AtomicU64,
    pub(crate) persistence: Option<Persistence<S>>,
}

impl<S> KindInner<S> {
    pub(crate) fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, SlotRef<S>>> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        lock_shard(&self.shards[index])
    }

    pub(crate) fn idle_after(&self) -> Duration {
        Duration::from_millis(self.idle_after_ms.load(Ordering::Relaxed))
    }

    /// Records `added` new and `removed` dropped slots and publishes the gauge.
    pub(crate) fn adjust_resident(&self, added: usize, removed: usize) {
        if added > 0 {
            self.resident.fetch_add(added, Ordering::Relaxed);
        }
        if removed > 0 {
            self.resident.fetch_sub(removed, Ordering::Relaxed);
        }
        let now = self.resident.load(Ordering::Relaxed);
        metrics::gauge!("sessiond_runtime_objects", "kind" => self.name.clone()).set(now as f64);
    }

    /// The slot of `key`, created if missing. The returned `Arc` is cloned under the shard
    /// lock, which is what makes the slot count as "in use" for eviction.
    pub(crate) fn slot(&self, key: &str) -> SlotRef<S> {
        let mut map = self.shard(key);
        if let Some(slot) = map.get(key) {
            return slot.clone();
        }
        let slot = Arc::new(tokio::sync::Mutex::new(Slot {
            state: None,
            synced: false,
            stored: None,
            last_used: Instant::now(),
        }));
        map.insert(key.to_string(), slot.clone());
        drop(map);
        self.adjust_resident(1, 0);
        slot
    }

    /// Called by a dropping guard whose slot holds no state: removes the slot if nobody but
    /// the table and that guard reference it, so lookups of missing keys do not pile up.
    pub(crate) fn release_empty(&self, key: &str, slot: &SlotRef<S>) {
        let mut map = self.shard(key);
        let removable = map
            .get(key)
            .is_some_and(|s| Arc::ptr_eq(s, slot) && Arc::strong_count(slot) == 2);
        if removable {
            map.remove(key);
            drop(map);
            self.adjust_resident(0, 1);
        }
    }
}

/// Locks a shard, recovering from poisoning: the map holds no invariant a panicking holder
/// could have broken halfway (each critical section is a single map operation).
pub(crate) fn lock_shard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
