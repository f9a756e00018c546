//! [`CacheStore`] on Redis: one HASH per entry, a ZSET index per namespace, and a global
//! namespace registry for the namespace-count limit.
//!
//! Why this shape: entries carry a native `PEXPIREAT`, so Redis drops them on time; the
//! per-namespace index (same hash tag as the entries) lets `clear` and the sweeper enumerate a
//! namespace without `SCAN`, and is itself expired with its longest-lived entry. The limit
//! needs a count of live namespaces across all namespaces, which no single slot can hold, so a
//! registry ZSET (score = upper bound of the namespace's last expiry) answers it: admission is
//! one atomic script on the registry, then the entry is written by one script on the
//! namespace's keys. The registry is cleaned lazily (when a delete/clear/sweep leaves a
//! namespace without live entries); in a race between a write and a concurrent clear of the
//! same namespace the count can be off by one until the next write or sweep.

use async_trait::async_trait;
use sessiond_store::{
    reserved_namespace, CacheEntry, CachePut, CacheStore, Durability, Millis, Result,
};

use crate::{lock, parse_num, parse_text, RedisEngine};

/// Members deleted per `clear` script call (bounds the time one script blocks the server).
const CLEAR_PAGE: usize = 256;

/// Index score of an entry: its expiry, `+inf` when it never expires.
fn score(expires_at: Option<Millis>) -> String {
    expires_at.map_or_else(|| "+inf".to_string(), |at| at.to_string())
}

impl RedisEngine {
    /// Drops `ns` from the namespace registry (it has no live entries left).
    async fn unregister_namespace(&self, ns: &str) -> Result<()> {
        let zrem = redis::cmd("ZREM")
            .arg(self.keys.cache_namespaces(reserved_namespace(ns)))
            .arg(ns)
            .clone();
        self.query::<i64>("cache_unregister", &zrem).await?;
        Ok(())
    }

    /// Runs the batch-delete script on `members` of `ns` in `mode` (`clear` or `sweep`).
    async fn cache_delete_members(
        &self,
        ns: &str,
        members: &[String],
        now: Millis,
        mode: &str,
    ) -> Result<u64> {
        let mut inv = self
            .scripts
            .cache_delete_many
            .key(self.keys.cache_index(ns));
        inv.arg(now).arg(mode);
        for m in members {
            inv.key(self.keys.cache_entry(ns, m)).arg(m);
        }
        self.eval("cache_delete_many", &inv).await
    }
}

#[async_trait]
impl CacheStore for RedisEngine {
    async fn cache_get(&self, ns: &str, key: &str, now: Millis) -> Result<Option<CacheEntry>> {
        let cmd = redis::cmd("HMGET")
            .arg(self.keys.cache_entry(ns, key))
            .arg("v")
            .arg("s")
            .arg("e")
            .clone();
        type Fields = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);
        let (value, stored_at, expires_at): Fields = self.query("cache_get", &cmd).await?;
        let (Some(value), Some(stored_at)) = (value, stored_at) else {
            return Ok(None);
        };
        let entry = CacheEntry {
            value: parse_text("value", value)?,
            stored_at: parse_num("stored_at", &stored_at)?,
            expires_at: expires_at
                .map(|e| parse_num("expires_at", &e))
                .transpose()?,
        };
        Ok(Some(entry).filter(|e| !e.is_expired(now)))
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
        let score = score(entry.expires_at);
        // Counts above 2^53 are "no limit" for a double anyway.
        let max = if max_namespaces >= (1usize << 53) {
            "inf".to_string()
        } else {
            max_namespaces.to_string()
        };
        let registry = self.keys.cache_namespaces(reserved_namespace(ns));
        let mut reserve = self.scripts.cache_reserve.key(registry);
        reserve.arg(ns).arg(now).arg(max).arg(&score);
        let admitted: i64 = self.eval("cache_reserve", &reserve).await?;
        if admitted != 1 {
            return Ok(CachePut::NamespaceLimit);
        }
        let mut put = self.scripts.cache_put.key(self.keys.cache_entry(ns, key));
        put.key(self.keys.cache_index(ns))
            .arg(key)
            .arg(&entry.value)
            .arg(entry.stored_at)
            .arg(entry.expires_at.map(|e| e.to_string()).unwrap_or_default())
            .arg(&score);
        self.eval::<i64>("cache_put", &put).await?;
        Ok(CachePut::Stored)
    }

    async fn cache_delete(&self, ns: &str, key: &str, now: Millis, _: Durability) -> Result<bool> {
        let mut inv = self
            .scripts
            .cache_delete
            .key(self.keys.cache_entry(ns, key));
        inv.key(self.keys.cache_index(ns)).arg(key).arg(now);
        let (live, remaining): (i64, i64) = self.eval("cache_delete", &inv).await?;
        if remaining == 0 {
            self.unregister_namespace(ns).await?;
        }
        Ok(live == 1)
    }

    async fn cache_clear(&self, ns: &str, now: Millis, _: Durability) -> Result<u64> {
        let index = self.keys.cache_index(ns);
        let mut live = 0;
        loop {
            let cmd = redis::cmd("ZRANGE")
                .arg(&index)
                .arg(0)
                .arg(CLEAR_PAGE - 1)
                .clone();
            let members: Vec<String> = self.query("cache_clear_range", &cmd).await?;
            if members.is_empty() {
                break;
            }
            live += self
                .cache_delete_members(ns, &members, now, "clear")
                .await?;
        }
        self.unregister_namespace(ns).await?;
        Ok(live)
    }

    async fn sweep_cache(&self, now: Millis, batch: usize) -> Result<usize> {
        // One registry per budget class, each walked from where its last sweep stopped.
        let mut removed = 0;
        for (reserved, cursor) in [
            (false, &self.cache_sweep_cursor),
            (true, &self.cache_sweep_cursor_reserved),
        ] {
            removed += self.sweep_registry(reserved, cursor, now, batch).await?;
        }
        Ok(removed)
    }
}

impl RedisEngine {
    /// One sweep step over the namespace registry of one class.
    async fn sweep_registry(
        &self,
        reserved: bool,
        cursor: &std::sync::Mutex<usize>,
        now: Millis,
        batch: usize,
    ) -> Result<usize> {
        // Entries expire natively; the sweeper removes index members (and entries) expired at
        // `now`, walking the namespace registry from where the last sweep stopped.
        let batch = batch.clamp(1, crate::MAX_SWEEP_BATCH);
        let start = *lock(cursor);
        let cmd = redis::cmd("ZRANGE")
            .arg(self.keys.cache_namespaces(reserved))
            .arg(start)
            .arg(start + batch - 1)
            .clone();
        let namespaces: Vec<String> = self.query("cache_sweep_registry", &cmd).await?;
        if namespaces.is_empty() {
            *lock(cursor) = 0;
            return Ok(0);
        }
        let mut budget = batch;
        let mut removed = 0usize;
        let mut visited = 0usize;
        for ns in &namespaces {
            if budget == 0 {
                break;
            }
            visited += 1;
            let index = self.keys.cache_index(ns);
            let range = redis::cmd("ZRANGE")
                .arg(&index)
                .arg("-inf")
                .arg(now)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(budget)
                .clone();
            let members: Vec<String> = self.query("cache_sweep_range", &range).await?;
            if !members.is_empty() {
                budget = budget.saturating_sub(members.len());
                let n = self
                    .cache_delete_members(ns, &members, now, "sweep")
                    .await?;
                removed += usize::try_from(n).unwrap_or(usize::MAX);
            }
            let exists: i64 = self
                .query("cache_sweep_check", redis::cmd("EXISTS").arg(&index))
                .await?;
            if exists == 0 {
                self.unregister_namespace(ns).await?;
            }
        }
        *lock(cursor) = start + visited;
        Ok(removed)
    }
}
