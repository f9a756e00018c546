//! Keyed compaction's one engine step (`StreamStore::drop_chunks`), kept apart from the
//! stream log's other statements.
//!
//! All or nothing: the caller decided which chunks are superseded by reading them, and a
//! chunk that vanished since (a trim, a seal into the cold tier) means its decision may no
//! longer hold (a delete is purged only together with every earlier event of its key), so one
//! missing chunk refuses the whole batch.

use rusqlite::{params, Connection};

use crate::stream_rows::{keep_tail, off, stream_id};

/// Deletes the chunks of `path` at `offsets` if every one exists; false otherwise.
pub(crate) fn drop_chunks(
    conn: &Connection,
    path: &str,
    offsets: &[u64],
) -> rusqlite::Result<bool> {
    let Some(id) = stream_id(conn, path)? else {
        return Ok(false);
    };
    let mut found =
        conn.prepare_cached("SELECT 1 FROM stream_chunks WHERE stream = ?1 AND offset = ?2")?;
    let mut keys = Vec::with_capacity(offsets.len());
    for o in offsets {
        let key = off("chunk offset", *o)?;
        if !found.exists(params![id, key])? {
            return Ok(false);
        }
        keys.push(key);
    }
    keep_tail(conn, id)?;
    let mut delete =
        conn.prepare_cached("DELETE FROM stream_chunks WHERE stream = ?1 AND offset = ?2")?;
    for key in keys {
        delete.execute(params![id, key])?;
    }
    Ok(true)
}
