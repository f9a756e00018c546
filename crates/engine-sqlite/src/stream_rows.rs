//! How the stream tables are addressed and their rows written: a stream's row id by its
//! path, offsets as SQLite integers, a new stream row, chunk rows. Shared by the stream log
//! (`streams.rs`), compaction's one engine step (`compaction.rs`), which the log calls, and
//! routed events (`routing.rs`): kept below them so none imports another for them.

use rusqlite::{params, Connection, OptionalExtension};
use sessiond_store::{StreamChunk, StreamMeta};

use crate::error::out_of_range;

/// A stream's tail as SQL over its `streams` row: the later of the row's `tail` and the end of
/// its last chunk. A commit that changes nothing of the row but the tail (a plain append, the
/// common case) writes only its chunks (`hot.rs`): rewriting the row cost a second page in
/// the WAL per append (with many streams, each append's row is on a page of its own), and
/// that page again at the checkpoint. So `streams.tail` is the tail as of the row's last
/// write, and anything that deletes chunks first writes the tail into the row
/// ([`keep_tail`]), since the last chunk is then no longer there to say it.
macro_rules! tail_sql {
    () => {
        "max(streams.tail, coalesce((SELECT c.offset + length(c.data) FROM stream_chunks c
           WHERE c.stream = streams.id ORDER BY c.offset DESC LIMIT 1), 0))"
    };
}
pub(crate) use tail_sql;

/// Writes the tail of stream `id` into its row: before deleting chunks, which may take the
/// last one (see [`tail_sql`]).
pub(crate) fn keep_tail(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(concat!(
        "UPDATE streams SET tail = ",
        tail_sql!(),
        " WHERE id = ?1"
    ))?
    .execute([id])?;
    Ok(())
}

/// A `u64` offset as an SQLite INTEGER (offsets at or above 2^63 are refused).
pub(crate) fn off(what: &str, value: u64) -> rusqlite::Result<i64> {
    i64::try_from(value).map_err(|_| out_of_range(what, value))
}

/// The id of the stream at `path`, if it exists.
pub(crate) fn stream_id(conn: &Connection, path: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM streams WHERE path = ?1")?
        .query_row([path], |row| row.get(0))
        .optional()
}

/// Inserts the stream row of `meta`; its id, or `None` if the path exists.
pub(crate) fn insert_stream(conn: &Connection, meta: &StreamMeta) -> rusqlite::Result<Option<i64>> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO streams (path, tail, expires_at, state, start)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (path) DO NOTHING",
        )?
        .execute(params![
            meta.path,
            off("tail", meta.tail)?,
            meta.expires_at,
            meta.state,
            off("start", meta.start)?
        ])?;
    Ok((inserted > 0).then(|| conn.last_insert_rowid()))
}

/// Inserts one chunk of stream `id` at `offset`.
pub(crate) fn insert_chunk(
    conn: &Connection,
    id: i64,
    offset: u64,
    data: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO stream_chunks (stream, offset, data) VALUES (?1, ?2, ?3)")?
        .execute(params![id, off("chunk offset", offset)?, data])?;
    Ok(())
}

/// Inserts `chunks` for stream `id`.
pub(crate) fn insert_chunks(
    conn: &Connection,
    id: i64,
    chunks: &[StreamChunk],
) -> rusqlite::Result<()> {
    for c in chunks {
        insert_chunk(conn, id, c.offset, &c.data)?;
    }
    Ok(())
}
