//! `StreamStore::create_fork` / `delete_fork` on SQLite: the fork's rows and its source's new
//! state, in one writer command (one transaction).
//!
//! Why the source's tail is neither checked nor written: a fork reads only its source's data
//! below the fork point, which appends never change, and the writer's routed appends (the
//! outbox, `routing.rs`) move a source's tail without the capability's lock. So the command
//! checks that the source exists (and, when asked, still holds the state and at most the
//! retained start the capability decided on: see `ForkSource::max_start`) and replaces only
//! its `state` and `expires_at`; its tail (the column and its last chunk, see
//! `stream_rows::tail_sql`) and retained start stay as they are.

use rusqlite::{params, Connection, OptionalExtension};
use sessiond_store::{ForkSource, StreamChunk, StreamMeta};

use crate::stream_rows::{insert_chunks, insert_stream, stream_id};
use crate::streams::{delete_rows, stored_off};

/// The id of a fork's source if it exists and holds the expected state and start (when given).
fn source_id(conn: &Connection, source: &ForkSource) -> rusqlite::Result<Option<i64>> {
    let found: Option<(i64, Vec<u8>, u64)> = conn
        .prepare_cached("SELECT id, state, start FROM streams WHERE path = ?1")?
        .query_row([&source.path], |row| {
            Ok((row.get(0)?, row.get(1)?, stored_off(row, 2)?))
        })
        .optional()?;
    Ok(found
        .filter(|(_, state, start)| source.matches(state, *start))
        .map(|(id, ..)| id))
}

/// Replaces the state and expiry of source `id` (never its tail or start).
fn update_source(conn: &Connection, id: i64, source: &ForkSource) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE streams SET expires_at = ?2, state = ?3 WHERE id = ?1")?
        .execute(params![id, source.expires_at, source.state])?;
    Ok(())
}

/// `StreamStore::create_fork`, as a writer command.
pub(crate) fn create(
    conn: &Connection,
    meta: &StreamMeta,
    chunks: &[StreamChunk],
    source: &ForkSource,
) -> rusqlite::Result<bool> {
    // Check before writing anything: a refusal then leaves nothing to roll back.
    let Some(src) = source_id(conn, source)? else {
        return Ok(false);
    };
    let Some(id) = insert_stream(conn, meta)? else {
        return Ok(false);
    };
    insert_chunks(conn, id, chunks)?;
    update_source(conn, src, source)?;
    Ok(true)
}

/// `StreamStore::delete_fork`, as a writer command.
pub(crate) fn delete(conn: &Connection, path: &str, source: &ForkSource) -> rusqlite::Result<bool> {
    let src = source_id(conn, source)?;
    let (Some(src), Some(id)) = (src, stream_id(conn, path)?) else {
        return Ok(false);
    };
    delete_rows(conn, id)?;
    update_source(conn, src, source)?;
    Ok(true)
}
