//! How the stream tables are addressed: a stream's row id by its path, and offsets as SQLite
//! integers. Shared by the stream log (`streams.rs`) and compaction's one engine step
//! (`compaction.rs`), which the log calls: kept below both so neither imports the other for
//! them.

use rusqlite::{Connection, OptionalExtension};

use crate::error::out_of_range;

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
