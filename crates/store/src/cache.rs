//! What the namespaced TTL cache needs from storage.
//!
//! Entries live in namespaces; a namespace is the unit of listing limits and of `clear`.
//! Values are JSON text stored verbatim, so `0`, `false`, `""` and `null` come back as stored
//! (a bug in both seeds that returned falsy values as misses). Cache entries live in their own
//! keyspace in every engine: no cache key can ever address a session.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Durability, Millis, Result};

/// One cached value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The value as JSON text.
    pub value: String,
    /// When it was stored (for `X-Cache-Age`).
    pub stored_at: Millis,
    /// When it stops existing; `None` = never.
    pub expires_at: Option<Millis>,
}

impl CacheEntry {
    /// Whether the entry is expired at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// Outcome of a cache write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachePut {
    /// Stored.
    Stored,
    /// Not stored: the namespace is new and `max_namespaces` live namespaces already exist.
    NamespaceLimit,
}

/// The class of a namespace for the namespace budget: `true` for the reserved `_`-prefixed
/// namespaces of the compat surfaces, which may be open to anonymous callers and so must not
/// share a budget with the native API's namespaces.
pub fn reserved_namespace(namespace: &str) -> bool {
    namespace.starts_with('_')
}

/// Storage for the cache.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// The live entry, or `None` if absent or expired at `now`.
    async fn cache_get(
        &self,
        namespace: &str,
        key: &str,
        now: Millis,
    ) -> Result<Option<CacheEntry>>;

    /// Stores (or overwrites) an entry. If the namespace holds no live entry and
    /// `max_namespaces` namespaces **of its class** ([`reserved_namespace`]) with live entries
    /// already exist, nothing is written. Reserved and ordinary namespaces are two separate
    /// budgets: one can never fill the other.
    async fn cache_put(
        &self,
        namespace: &str,
        key: &str,
        entry: &CacheEntry,
        max_namespaces: usize,
        now: Millis,
        durability: Durability,
    ) -> Result<CachePut>;

    /// Deletes an entry; true if a live one existed.
    async fn cache_delete(
        &self,
        namespace: &str,
        key: &str,
        now: Millis,
        durability: Durability,
    ) -> Result<bool>;

    /// Deletes every entry of exactly this namespace (never of another namespace that merely
    /// shares a prefix); returns how many live entries were deleted.
    async fn cache_clear(
        &self,
        namespace: &str,
        now: Millis,
        durability: Durability,
    ) -> Result<u64>;

    /// Deletes up to `batch` entries expired at `now`; returns how many.
    async fn sweep_cache(&self, now: Millis, batch: usize) -> Result<usize>;
}
