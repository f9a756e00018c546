//! `CacheStore` as SQL over the `cache` table.
//!
//! Cache rows live in their own table, so no cache key can address a session. An entry is live
//! at `now` iff `expires_at IS NULL OR expires_at > now`; reads filter on it in SQL. The
//! namespace-limit check of `cache_put` reads before it writes, so it runs as a writer command
//! inside the writer's transaction, where no other write can interleave.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use sessiond_store::{
    reserved_namespace, CacheEntry, CachePut, CacheStore, Durability, Millis, Result,
};

use crate::error::limit;
use crate::SqliteEngine;

/// The liveness filter, for a statement whose `now` parameter is `?{n}`.
macro_rules! live {
    ($n:literal) => {
        concat!("(expires_at IS NULL OR expires_at > ?", $n, ")")
    };
}

/// Whether a write to `namespace` is allowed under `max_namespaces`.
fn within_limit(
    conn: &Connection,
    namespace: &str,
    max_namespaces: usize,
    now: Millis,
) -> rusqlite::Result<bool> {
    // Walks the namespace's own rows in primary-key order until a live one.
    let namespace_live: bool = conn
        .prepare_cached(concat!(
            "SELECT EXISTS (SELECT 1 FROM cache WHERE namespace = ?1 AND ",
            live!(2),
            ")"
        ))?
        .query_row(params![namespace, now], |row| row.get(0))?;
    if namespace_live || max_namespaces == usize::MAX {
        return Ok(true);
    }
    // A new namespace: count the namespaces of its class (reserved `_…` or not) with live
    // entries, stopping at the limit. This scans the cache table (O(entries)), but only when
    // a write opens a namespace that has no live entry; writes to existing namespaces never
    // get here. (`GLOB '_*'`: `_` is literal in GLOB patterns.)
    let live_namespaces: i64 = conn
        .prepare_cached(concat!(
            "SELECT count(*) FROM (SELECT DISTINCT namespace FROM cache WHERE ",
            live!(1),
            " AND (namespace GLOB '_*') = ?3 LIMIT ?2)"
        ))?
        .query_row(
            params![now, limit(max_namespaces), reserved_namespace(namespace)],
            |row| row.get(0),
        )?;
    Ok(usize::try_from(live_namespaces).unwrap_or(usize::MAX) < max_namespaces)
}

#[async_trait]
impl CacheStore for SqliteEngine {
    async fn cache_get(&self, ns: &str, key: &str, now: Millis) -> Result<Option<CacheEntry>> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT value, stored_at, expires_at FROM cache
                 WHERE namespace = ?1 AND key = ?2 AND ",
                live!(3)
            ))?
            .query_row(params![ns, key, now], |row| {
                Ok(CacheEntry {
                    value: row.get(0)?,
                    stored_at: row.get(1)?,
                    expires_at: row.get(2)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn cache_put(
        &self,
        ns: &str,
        key: &str,
        entry: &CacheEntry,
        max_namespaces: usize,
        now: Millis,
        durability: Durability,
    ) -> Result<CachePut> {
        let (ns, key, entry) = (ns.to_owned(), key.to_owned(), entry.clone());
        self.write_beside_streams(durability, move |conn| {
            if !within_limit(conn, &ns, max_namespaces, now)? {
                return Ok(CachePut::NamespaceLimit);
            }
            conn.prepare_cached(
                "INSERT INTO cache (namespace, key, value, stored_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
                     stored_at = excluded.stored_at, expires_at = excluded.expires_at",
            )?
            .execute(params![
                ns,
                key,
                entry.value,
                entry.stored_at,
                entry.expires_at
            ])?;
            Ok(CachePut::Stored)
        })
        .await
    }

    async fn cache_delete(
        &self,
        ns: &str,
        key: &str,
        now: Millis,
        durability: Durability,
    ) -> Result<bool> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.write_beside_streams(durability, move |conn| {
            // The row goes either way; only a live one counts as deleted.
            let expires_at: Option<Option<Millis>> = conn
                .prepare_cached(
                    "DELETE FROM cache WHERE namespace = ?1 AND key = ?2 RETURNING expires_at",
                )?
                .query_row(params![ns, key], |row| row.get(0))
                .optional()?;
            Ok(expires_at.is_some_and(|at| at.is_none_or(|at| at > now)))
        })
        .await
    }

    async fn cache_clear(&self, ns: &str, now: Millis, durability: Durability) -> Result<u64> {
        let ns = ns.to_owned();
        self.write_beside_streams(durability, move |conn| {
            // `namespace = ?` is an exact match: `a` never clears `ab`.
            let live: i64 = conn
                .prepare_cached(concat!(
                    "SELECT count(*) FROM cache WHERE namespace = ?1 AND ",
                    live!(2)
                ))?
                .query_row(params![ns, now], |row| row.get(0))?;
            conn.prepare_cached("DELETE FROM cache WHERE namespace = ?1")?
                .execute(params![ns])?;
            Ok(u64::try_from(live).unwrap_or(0))
        })
        .await
    }

    async fn sweep_cache(&self, now: Millis, batch: usize) -> Result<usize> {
        // A lost sweep is redone by the next one: no need to wait for the fsync.
        self.write_beside_streams(Durability::Unconfirmed, move |conn| {
            conn.prepare_cached(
                "DELETE FROM cache WHERE rowid IN
                     (SELECT rowid FROM cache WHERE expires_at <= ?1 LIMIT ?2)",
            )?
            .execute(params![now, limit(batch)])
        })
        .await
    }
}
