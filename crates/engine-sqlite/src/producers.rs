//! A stream's idempotent producer rows (`stream_producers`, keyed by stream id and producer
//! id): written inside a commit's savepoint by the writer thread, read one at a time by the
//! append path and page by page (in id order, the primary key's order) by the admin listing.

use rusqlite::{params, Connection, OptionalExtension};
use sessiond_store::{ProducerRecord, ProducerUpdate, Result};

use crate::error::limit;
use crate::SqliteEngine;

/// A stream's first producer rows, written with the stream itself: it has none yet (a
/// deleted stream's rows went with it, so a reused id starts empty), so each row is inserted
/// without the update tried first, and nothing is counted unless the rows alone exceed the
/// cap. Why: for a stream created with its first append (the security relay's per-user
/// streams) the update and the count were most of the producer row's cost.
pub(crate) fn insert_producers(
    conn: &Connection,
    id: i64,
    update: &ProducerUpdate,
) -> rusqlite::Result<()> {
    if update.max_producers != 0 && update.upsert.len() > update.max_producers {
        return apply_producers(conn, id, update);
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO stream_producers (stream, id, state, used_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (stream, id) DO UPDATE SET state = excluded.state, used_at = excluded.used_at",
    )?;
    for r in &update.upsert {
        insert.execute(params![id, r.id, r.state, r.used_at])?;
    }
    Ok(())
}

/// Writes a commit's producer rows, then evicts the least recently used beyond the cap (only
/// counted when a row was inserted: an update cannot grow the table).
pub(crate) fn apply_producers(
    conn: &Connection,
    id: i64,
    update: &ProducerUpdate,
) -> rusqlite::Result<()> {
    let mut inserted = false;
    for r in &update.upsert {
        let updated = conn
            .prepare_cached(
                "UPDATE stream_producers SET state = ?3, used_at = ?4 WHERE stream = ?1 AND id = ?2",
            )?
            .execute(params![id, r.id, r.state, r.used_at])?;
        if updated == 0 {
            conn.prepare_cached(
                "INSERT INTO stream_producers (stream, id, state, used_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, r.id, r.state, r.used_at])?;
            inserted = true;
        }
    }
    if !inserted || update.max_producers == 0 {
        return Ok(());
    }
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM stream_producers WHERE stream = ?1")?
        .query_row([id], |row| row.get(0))?;
    let surplus = usize::try_from(count)
        .unwrap_or(0)
        .saturating_sub(update.max_producers);
    if surplus == 0 {
        return Ok(());
    }
    let victims: Vec<String> = conn
        .prepare_cached(
            "SELECT id FROM stream_producers WHERE stream = ?1 ORDER BY used_at, id LIMIT ?2",
        )?
        .query_map(params![id, limit(surplus + update.upsert.len())], |row| {
            row.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut delete =
        conn.prepare_cached("DELETE FROM stream_producers WHERE stream = ?1 AND id = ?2")?;
    for victim in victims
        .iter()
        .filter(|v| !update.upsert.iter().any(|r| &r.id == *v))
        .take(surplus)
    {
        delete.execute(params![id, victim])?;
    }
    Ok(())
}

impl SqliteEngine {
    pub(crate) async fn producer(&self, path: &str, id: &str) -> Result<Option<ProducerRecord>> {
        let (path, id) = (path.to_owned(), id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT p.state, p.used_at FROM streams s
                 JOIN stream_producers p ON p.stream = s.id
                 WHERE s.path = ?1 AND p.id = ?2",
            )?
            .query_row(params![path, id], |row| {
                Ok(ProducerRecord {
                    id: id.clone(),
                    state: row.get(0)?,
                    used_at: row.get(1)?,
                })
            })
            .optional()
        })
        .await
    }

    /// Up to `max` rows with an id after `after`, by id; none if the stream does not exist.
    pub(crate) async fn producers_page(
        &self,
        path: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ProducerRecord>> {
        let (path, after) = (path.to_owned(), after.map(str::to_owned));
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT p.id, p.state, p.used_at FROM streams s
                 JOIN stream_producers p ON p.stream = s.id
                 WHERE s.path = ?1 AND (?2 IS NULL OR p.id > ?2)
                 ORDER BY p.id LIMIT ?3",
            )?
            .query_map(params![path, after, limit(max)], |row| {
                Ok(ProducerRecord {
                    id: row.get(0)?,
                    state: row.get(1)?,
                    used_at: row.get(2)?,
                })
            })?
            .collect()
        })
        .await
    }
}
