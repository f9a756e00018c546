//! The erasure list in the `erasures` table, and its re-application to a restored database.
//!
//! Re-application is what makes an erasure outlive `sessiond restore`: a backup taken before
//! the erasure still holds the user's rows, so after copying it into place the restore hands
//! the live list to [`reapply`], which deletes every record keyed by an erased id. The list
//! holds hashes, not ids, so the candidates are the ids the database itself keys records by
//! (session owners, object keys), each hashed and looked up.

use std::collections::HashSet;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use sessiond_store::{erasure_hash, ErasureStore, Millis, Result};

use crate::error::sql;
use crate::{schema, SqliteEngine};

fn insert(conn: &Connection, hash: &str, at: Millis) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO erasures (user_hash, erased_at) VALUES (?1, ?2)
         ON CONFLICT (user_hash) DO NOTHING",
    )?
    .execute(params![hash, at])?;
    Ok(())
}

fn list(conn: &Connection) -> rusqlite::Result<Vec<(String, Millis)>> {
    conn.prepare_cached("SELECT user_hash, erased_at FROM erasures ORDER BY erased_at, user_hash")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

#[async_trait]
impl ErasureStore for SqliteEngine {
    async fn record_erasure(&self, user_hash: &str, at: Millis) -> Result<()> {
        let hash = user_hash.to_owned();
        self.write(sessiond_store::Durability::Confirmed, move |conn| {
            insert(conn, &hash, at)
        })
        .await
    }

    async fn erasures(&self) -> Result<Vec<(String, Millis)>> {
        self.read(list).await
    }
}

/// What [`reapply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reapplied {
    /// The database's erasure list afterwards (its own entries and the added ones).
    pub list: Vec<(String, Millis)>,
    /// Sessions deleted because their owner is on the list.
    pub sessions: usize,
    /// Objects (and their alarms) deleted because their key is on the list.
    pub objects: usize,
}

/// Adds `entries` to the erasure list of the database file `db` (migrating it first) and
/// deletes every session owned by, and every object keyed by, an id on the resulting list, in
/// one transaction. Blocking; no server may have the file open.
pub fn reapply(db: &Path, entries: &[(String, Millis)]) -> Result<Reapplied> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(db, flags).map_err(sql)?;
    schema::configure_writer(&conn)?;
    schema::migrate(&mut conn)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let done = (|| {
        for (hash, at) in entries {
            insert(&tx, hash, *at)?;
        }
        let list = list(&tx)?;
        let erased: HashSet<&str> = list.iter().map(|(h, _)| h.as_str()).collect();
        let owners: Vec<String> = tx
            .prepare("SELECT DISTINCT user_id FROM sessions WHERE user_id IS NOT NULL")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut sessions = 0;
        for owner in owners
            .iter()
            .filter(|u| erased.contains(erasure_hash(u).as_str()))
        {
            sessions += tx.execute("DELETE FROM sessions WHERE user_id = ?1", [owner])?;
        }
        let keys: Vec<(String, String)> = tx
            .prepare("SELECT kind, key FROM objects")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut objects = 0;
        for (kind, key) in keys
            .iter()
            .filter(|(_, k)| erased.contains(erasure_hash(k).as_str()))
        {
            objects += tx.execute(
                "DELETE FROM objects WHERE kind = ?1 AND key = ?2",
                params![kind, key],
            )?;
            tx.execute(
                "DELETE FROM alarms WHERE kind = ?1 AND key = ?2",
                params![kind, key],
            )?;
        }
        Ok(Reapplied {
            list: list.clone(),
            sessions,
            objects,
        })
    })()
    .map_err(sql)?;
    tx.commit().map_err(sql)?;
    // Back to a single file: the restore renames it into place.
    conn.pragma_update(None, "journal_mode", "DELETE")
        .map_err(sql)?;
    Ok(done)
}
