//! The namespaced TTL cache.
//!
//! Namespaces are the unit of isolation: the native API's namespaces come from the URL and may
//! not start with `_`; the compat routes use reserved `_`-prefixed namespaces, so no native
//! request can read or clear a compat entry and no cache key can ever reach a session (they
//! live in different stores).

use std::sync::Arc;

use serde_json::Value;
use sessiond_http::{ApiError, ApiResult};
use sessiond_store::{
    now_ms, reserved_namespace, CacheEntry, CachePut, CacheStore, Durability, Millis,
};

use crate::config::SessionsConfig;
use crate::service::secs_to_ms;

/// A hit: the value and its age.
#[derive(Debug)]
pub struct Hit {
    /// The value exactly as stored, as JSON text.
    pub value: String,
    /// Milliseconds since it was stored.
    pub age_ms: Millis,
}

/// How long an entry lives.
#[derive(Debug, Clone, Copy)]
pub enum Ttl {
    /// The configured default.
    Default,
    /// This many seconds (0 = never expires).
    Seconds(u64),
}

/// Cache service. Cheap to clone.
#[derive(Clone)]
pub struct CacheService {
    store: Arc<dyn CacheStore>,
    config: Arc<SessionsConfig>,
}

impl CacheService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn CacheStore>, config: Arc<SessionsConfig>) -> Self {
        CacheService { store, config }
    }

    /// Validates a namespace or key from a client.
    pub fn check_name(&self, what: &str, name: &str) -> ApiResult<()> {
        if name.is_empty() {
            return Err(ApiError::bad_request(format!("{what} must not be empty")));
        }
        if name.len() > self.config.max_id_bytes {
            return Err(ApiError::bad_request(format!(
                "{what} is longer than {} bytes",
                self.config.max_id_bytes
            )));
        }
        Ok(())
    }

    /// Validates a namespace chosen by a native client (not reserved).
    pub fn check_public_namespace(&self, namespace: &str) -> ApiResult<()> {
        self.check_name("namespace", namespace)?;
        if namespace.starts_with('_') {
            return Err(ApiError::bad_request(
                "namespaces starting with `_` are reserved",
            ));
        }
        Ok(())
    }

    /// The live entry, if any.
    pub async fn get(&self, namespace: &str, key: &str) -> ApiResult<Option<Hit>> {
        self.check_name("namespace", namespace)?;
        self.check_name("key", key)?;
        let now = now_ms();
        let entry = self.store.cache_get(namespace, key, now).await?;
        metrics::counter!("sessiond_cache_lookups_total", "result" => if entry.is_some() { "hit" } else { "miss" }).increment(1);
        Ok(entry.map(|e| Hit {
            age_ms: (now - e.stored_at).max(0),
            value: e.value,
        }))
    }

    /// Stores `value` under `namespace/key`.
    pub async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: &Value,
        ttl: Ttl,
        durability: Durability,
    ) -> ApiResult<()> {
        self.check_name("namespace", namespace)?;
        self.check_name("key", key)?;
        let ttl_s = match ttl {
            Ttl::Default => self.config.cache.default_ttl_s,
            Ttl::Seconds(s) => s,
        };
        if ttl_s > self.config.cache.max_ttl_s {
            return Err(ApiError::bad_request(format!(
                "ttl_s must be at most {}",
                self.config.cache.max_ttl_s
            )));
        }
        let text = serde_json::to_string(value).map_err(ApiError::internal)?;
        if text.len() > self.config.max_value_bytes {
            return Err(ApiError::too_large(format!(
                "cache value is {} bytes, above the limit of {} bytes",
                text.len(),
                self.config.max_value_bytes
            )));
        }
        let now = now_ms();
        let entry = CacheEntry {
            value: text,
            stored_at: now,
            expires_at: (ttl_s > 0).then(|| now.saturating_add(secs_to_ms(ttl_s))),
        };
        // Compat (reserved) namespaces have their own budget: an open compat surface can
        // fill only that one, never the native API's.
        let (max, budget) = match reserved_namespace(namespace) {
            true => (self.config.cache.max_compat_namespaces, "compat "),
            false => (self.config.cache.max_namespaces, ""),
        };
        match self
            .store
            .cache_put(namespace, key, &entry, max, now, durability)
            .await?
        {
            CachePut::Stored => Ok(()),
            CachePut::NamespaceLimit => Err(ApiError::limit(format!(
                "the cache holds {max} {budget}namespaces, the configured maximum"
            ))),
        }
    }

    /// Deletes one entry; true if a live one existed.
    pub async fn delete(
        &self,
        namespace: &str,
        key: &str,
        durability: Durability,
    ) -> ApiResult<bool> {
        self.check_name("namespace", namespace)?;
        self.check_name("key", key)?;
        Ok(self
            .store
            .cache_delete(namespace, key, now_ms(), durability)
            .await?)
    }

    /// Deletes a whole namespace; returns how many live entries went.
    pub async fn clear(&self, namespace: &str, durability: Durability) -> ApiResult<u64> {
        self.check_name("namespace", namespace)?;
        Ok(self
            .store
            .cache_clear(namespace, now_ms(), durability)
            .await?)
    }
}
