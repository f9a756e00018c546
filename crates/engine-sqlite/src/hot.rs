//! What the writer thread keeps from one batch to the next: the statements of its hot path,
//! prepared once for the thread's life, and the stream tails (`tails.rs`).
//!
//! Why not rusqlite's statement cache: every `prepare_cached` hashes the SQL text to find the
//! statement and every drop of it hashes it again to put it back (about 1.2 k instructions a
//! use, 3 to 5 k per append over the transaction frame, the chunk insert and the stream
//! update). These statements borrow the writer's connection, so they live in the thread body
//! and are dropped before the connection is closed.

use rusqlite::{Connection, Statement};

use crate::stream_rows::tail_sql;
use crate::tails::StreamTails;

/// The writer thread's state between batches; stream commits use the statements and tails.
pub(crate) struct WriterState<'c> {
    pub(crate) tails: StreamTails,
    pub(crate) begin: Statement<'c>,
    pub(crate) commit: Statement<'c>,
    pub(crate) rollback: Statement<'c>,
    pub(crate) savepoint: Statement<'c>,
    pub(crate) release: Statement<'c>,
    /// `(stream, offset, data)`.
    pub(crate) insert_chunk: Statement<'c>,
    /// `(id, tail, expires_at, state)`: writes the row only if its expiry or state changed
    /// (the tail alone is the end of the last chunk, see `stream_rows::tail_sql`). Not run at
    /// all when the stream tails know both are unchanged.
    pub(crate) update_stream: Statement<'c>,
    /// `(path)` → `(id, tail, expires_at, state)`, a `tails::Row`.
    pub(crate) stream_row: Statement<'c>,
}

impl<'c> WriterState<'c> {
    pub(crate) fn prepare(conn: &'c Connection, stream_tails: usize) -> rusqlite::Result<Self> {
        Ok(WriterState {
            tails: StreamTails::new(stream_tails),
            begin: conn.prepare("BEGIN IMMEDIATE")?,
            commit: conn.prepare("COMMIT")?,
            rollback: conn.prepare("ROLLBACK")?,
            savepoint: conn.prepare("SAVEPOINT command")?,
            release: conn.prepare("RELEASE command")?,
            insert_chunk: conn
                .prepare("INSERT INTO stream_chunks (stream, offset, data) VALUES (?1, ?2, ?3)")?,
            update_stream: conn.prepare(
                "UPDATE streams SET tail = ?2, expires_at = ?3, state = ?4
                 WHERE id = ?1 AND (expires_at IS NOT ?3 OR state IS NOT ?4)",
            )?,
            stream_row: conn.prepare(concat!(
                "SELECT id, ",
                tail_sql!(),
                ", expires_at, state FROM streams WHERE path = ?1"
            ))?,
        })
    }
}
