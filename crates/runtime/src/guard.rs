//! Exclusive access to one object: the guard returned by [`ObjectKind::lock`].
//!
//! The guard owns the object's async mutex guard (an `OwnedMutexGuard`, so it is `'static` and
//! can move into spawned tasks), derefs to the cached `Option<S>`, and offers the persistence
//! helpers. Holding it is what serializes work on the object: everything done between
//! `lock().await` and dropping the guard, storage awaits included, is atomic with respect to
//! other holders of the same key.
//!
//! Cache rule: the in-memory state is authoritative while the object is resident. `load()`
//! reads the store only when nothing is cached and the store has not been consulted in this
//! residency (after eviction, or on first access); `save()` writes through and then caches.
//!
//! On a store shared by several processes that rule does not hold (another node may write),
//! so a capability there calls [`ObjectGuard::reload`] (always reads) and writes with
//! [`ObjectGuard::persist_checked`], a compare-and-set against the bytes this guard read:
//! a write that lost a race writes nothing and forgets the cache, and the caller decides
//! again on fresh state.
//!
//! [`ObjectKind::lock`]: crate::ObjectKind::lock

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sessiond_store::Durability;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::table::{KindInner, Persistence, Slot};
use crate::RuntimeError;

/// Exclusive access to the object `(kind, key)` until dropped.
pub struct ObjectGuard<S> {
    kind: Arc<KindInner<S>>,
    key: String,
    slot: OwnedMutexGuard<Slot<S>>,
}

impl<S: Send + 'static> ObjectGuard<S> {
    pub(crate) fn new(
        kind: Arc<KindInner<S>>,
        key: String,
        slot: OwnedMutexGuard<Slot<S>>,
    ) -> Self {
        ObjectGuard { kind, key, slot }
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's kind name.
    pub fn kind(&self) -> &str {
        &self.kind.name
    }

    /// The cached state, if any (does not read the store; see [`load`](Self::load)).
    pub fn state(&self) -> Option<&S> {
        self.slot.state.as_ref()
    }

    /// The cached state, mutably.
    pub fn state_mut(&mut self) -> Option<&mut S> {
        self.slot.state.as_mut()
    }

    /// Replaces the cached state (memory only; [`save`](Self::save) also persists).
    pub fn set(&mut self, state: S) {
        self.slot.state = Some(state);
    }

    /// Removes and returns the cached state (memory only).
    pub fn take(&mut self) -> Option<S> {
        self.slot.state.take()
    }

    /// The cached state, inserting `f()` first if there is none.
    pub fn get_or_insert_with(&mut self, f: impl FnOnce() -> S) -> &mut S {
        self.slot.state.get_or_insert_with(f)
    }

    /// True once the store has been consulted (or written) in this residency, so an empty
    /// state means the object does not exist rather than "not loaded yet".
    pub fn is_synced(&self) -> bool {
        self.slot.synced
    }

    fn persistence(&self) -> Result<&Persistence<S>, RuntimeError> {
        self.kind
            .persistence
            .as_ref()
            .ok_or_else(|| RuntimeError::NotPersistent(self.kind.name.clone()))
    }

    fn codec_error(&self, source: crate::CodecError) -> RuntimeError {
        RuntimeError::Codec {
            kind: self.kind.name.clone(),
            key: self.key.clone(),
            source,
        }
    }

    /// The object's state, read from the store if nothing is cached and the store was not
    /// consulted yet in this residency (first access, or after eviction). For an in-memory
    /// kind this is just the cached state.
    pub async fn load(&mut self) -> Result<Option<&mut S>, RuntimeError> {
        if self.slot.state.is_none() && !self.slot.synced {
            if let Some(p) = &self.kind.persistence {
                let bytes = p.store.load_object(&self.kind.name, &self.key).await?;
                let state = match &bytes {
                    Some(b) => Some(p.codec.decode(b).map_err(|m| self.codec_error(m))?),
                    None => None,
                };
                self.slot.state = state;
                self.slot.stored = bytes;
                self.slot.synced = true;
            }
        }
        Ok(self.slot.state.as_mut())
    }

    /// The object's state read from the store now, whatever is cached (for stores other
    /// processes write too). On error the cache is forgotten.
    pub async fn reload(&mut self) -> Result<Option<&mut S>, RuntimeError> {
        self.forget();
        self.load().await
    }

    /// Drops the cached state, so the next [`load`](Self::load) reads the store.
    pub fn forget(&mut self) {
        self.slot.state = None;
        self.slot.stored = None;
        self.slot.synced = false;
    }

    /// Writes the cached state through only if the store still holds what this guard last
    /// read or wrote (absence included): true if written. False means another process wrote
    /// the object since; nothing was written and the cache is forgotten, so the caller
    /// reloads and decides again. False, writing nothing, when there is no cached state.
    pub async fn persist_checked(&mut self, durability: Durability) -> Result<bool, RuntimeError> {
        let p = self.persistence()?;
        let Some(state) = self.slot.state.as_ref() else {
            return Ok(false);
        };
        let bytes = p.codec.encode(state).map_err(|m| self.codec_error(m))?;
        let swapped = p
            .store
            .swap_object(
                &self.kind.name,
                &self.key,
                self.slot.stored.as_deref(),
                Some(&bytes),
                durability,
            )
            .await?;
        if swapped {
            self.slot.stored = Some(bytes);
            self.slot.synced = true;
        } else {
            self.forget();
        }
        Ok(swapped)
    }

    /// Writes `state` through to the store, then caches it. On error nothing changes.
    pub async fn save(&mut self, state: S, durability: Durability) -> Result<(), RuntimeError> {
        let p = self.persistence()?;
        let bytes = p.codec.encode(&state).map_err(|m| self.codec_error(m))?;
        p.store
            .save_object(&self.kind.name, &self.key, &bytes, durability)
            .await?;
        self.slot.state = Some(state);
        self.slot.stored = Some(bytes);
        self.slot.synced = true;
        Ok(())
    }

    /// Writes the cached state (e.g. after [`state_mut`](Self::state_mut)) through to the
    /// store. Returns false, writing nothing, when there is no cached state.
    pub async fn persist(&mut self, durability: Durability) -> Result<bool, RuntimeError> {
        let p = self.persistence()?;
        let Some(state) = self.slot.state.as_ref() else {
            return Ok(false);
        };
        let bytes = p.codec.encode(state).map_err(|m| self.codec_error(m))?;
        p.store
            .save_object(&self.kind.name, &self.key, &bytes, durability)
            .await?;
        self.slot.stored = Some(bytes);
        self.slot.synced = true;
        Ok(true)
    }

    /// Deletes the persisted object (and, per the store contract, all its alarms) and clears
    /// the cache. True if persisted state existed.
    pub async fn delete(&mut self, durability: Durability) -> Result<bool, RuntimeError> {
        let p = self.persistence()?;
        let existed = p
            .store
            .delete_object(&self.kind.name, &self.key, durability)
            .await?;
        self.slot.state = None;
        self.slot.stored = None;
        self.slot.synced = true;
        Ok(existed)
    }
}

impl<S> Deref for ObjectGuard<S> {
    type Target = Option<S>;

    fn deref(&self) -> &Option<S> {
        &self.slot.state
    }
}

impl<S> DerefMut for ObjectGuard<S> {
    fn deref_mut(&mut self) -> &mut Option<S> {
        &mut self.slot.state
    }
}

impl<S> Drop for ObjectGuard<S> {
    fn drop(&mut self) {
        self.slot.last_used = Instant::now();
        if self.slot.state.is_none() {
            // Nothing cached: drop the slot now unless someone waits for it, so probing many
            // missing keys does not grow the table until the next sweep.
            self.kind
                .release_empty(&self.key, OwnedMutexGuard::mutex(&self.slot));
        }
    }
}

impl<S> std::fmt::Debug for ObjectGuard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectGuard")
            .field("kind", &self.kind.name)
            .field("key", &self.key)
            .field("has_state", &self.slot.state.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sessiond_store::memory::MemoryEngine;
    use sessiond_store::ObjectStore;

    use crate::{JsonCodec, ObjectKind};

    #[tokio::test]
    async fn checked_writes_lose_to_another_process_and_reload() {
        // Two kinds over one store: two processes sharing an engine.
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryEngine::new());
        let a = ObjectKind::<u32>::persistent("n", store.clone(), JsonCodec);
        let b = ObjectKind::<u32>::persistent("n", store.clone(), JsonCodec);
        let mut ga = a.lock("k").await;
        let mut gb = b.lock("k").await;
        assert!(ga.load().await.expect("load").is_none());
        assert!(gb.load().await.expect("load").is_none());
        ga.set(1);
        assert!(ga
            .persist_checked(super::Durability::Confirmed)
            .await
            .expect("cas"));
        // B decided on "absent": it loses, writes nothing and forgets its cache.
        gb.set(2);
        assert!(!gb
            .persist_checked(super::Durability::Confirmed)
            .await
            .expect("cas"));
        assert!(!gb.is_synced());
        assert_eq!(gb.load().await.expect("load").copied(), Some(1));
        *gb.state_mut().expect("state") += 10;
        assert!(gb
            .persist_checked(super::Durability::Confirmed)
            .await
            .expect("cas"));
        // A's cache is stale: `load` keeps it, `reload` reads the store.
        assert_eq!(ga.load().await.expect("load").copied(), Some(1));
        assert_eq!(ga.reload().await.expect("reload").copied(), Some(11));
        assert!(ga
            .persist_checked(super::Durability::Confirmed)
            .await
            .expect("cas"));
    }
}
