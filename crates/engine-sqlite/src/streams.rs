//! `StreamStore` as SQL over the `streams`, `stream_chunks`, `stream_segments` and
//! `stream_producers` tables (the layout and why it is shaped so are in `schema.rs`, versions 2
//! and 3).
//!
//! Writes are commands of the writer thread, so they join its group commit: appends to many
//! streams that arrive together share one transaction and one WAL fsync, and each is answered
//! per its `Durability` only after that. Each command's read-then-write logic (the tail check of
//! `commit`, the existence checks of `create_stream` and `seal_segment`) runs inside the
//! writer's transaction, under the command's own savepoint: a failing command (say, a chunk
//! offset that already exists) rolls back all of its rows and nothing else.
//!
//! Reads run on the reader pool. A read that needs several statements (find the stream's id,
//! then the chunk containing `from`, then scan) runs them in one read transaction, so it sees
//! one snapshot even if a seal or a delete-and-recreate commits in between. The scan steps rows
//! lazily and stops once `max_bytes` are collected, so a page costs what it returns, whatever
//! the stream's length.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use sessiond_store::{
    CheckedWrite, Commit, CommitTicket, Durability, ForkSource, Millis, ProducerRecord,
    ProducerUpdate, Result, SegmentRef, StreamChunk, StreamMeta, StreamStore, Trimmed,
};

use crate::error::limit;
use crate::hot::WriterState;
use crate::objects::prefix_end;
use crate::producers::{apply_producers, insert_producers};
use crate::stream_rows::{insert_chunks, insert_stream, keep_tail, off, stream_id, tail_sql};
use crate::tails::Row;
use crate::writer::Again;
use crate::SqliteEngine;

/// Reads a stored offset back (a negative one would be a corrupt file: the CHECKs forbid it).
pub(crate) fn stored_off(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

/// Deletes stream `id` and every row that belongs to it.
pub(crate) fn delete_rows(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    for sql in [
        "DELETE FROM stream_chunks WHERE stream = ?1",
        "DELETE FROM stream_segments WHERE stream = ?1",
        "DELETE FROM stream_producers WHERE stream = ?1",
        "DELETE FROM streams WHERE id = ?1",
    ] {
        conn.prepare_cached(sql)?.execute([id])?;
    }
    Ok(())
}

/// The id, tail and state of the stream row at `path`.
fn stored_row(conn: &Connection, path: &str) -> rusqlite::Result<Option<(i64, i64, Vec<u8>)>> {
    conn.prepare_cached(concat!(
        "SELECT id, ",
        tail_sql!(),
        ", state FROM streams WHERE path = ?1"
    ))?
    .query_row([path], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
    .optional()
}

/// The id and stored tail of the stream at `path`, from the writer's stream tails (else read
/// and remembered), and whether its stored expiry and state are already `meta`'s, so that the
/// row's `UPDATE` would write nothing.
fn remembered_row(
    state: &mut WriterState<'_>,
    path: &str,
    meta: &StreamMeta,
) -> rusqlite::Result<Option<(i64, i64, bool)>> {
    let unchanged = |row: &Row| row.expires_at == meta.expires_at && row.state == meta.state;
    if let Some(row) = state.tails.get_mut(path) {
        return Ok(Some((row.id, row.tail, unchanged(row))));
    }
    read_row(state, path, |row| (row.id, row.tail, unchanged(row)))
}

/// Reads the row of the stream at `path` (with the writer's statement), remembers it in the
/// writer's stream tails and answers `seen` of it (`None`: no such stream).
pub(crate) fn read_row<T>(
    state: &mut WriterState<'_>,
    path: &str,
    seen: impl FnOnce(&Row) -> T,
) -> rusqlite::Result<Option<T>> {
    let read = state
        .stream_row
        .query_row([path], |row| {
            Ok(Row {
                id: row.get(0)?,
                tail: row.get(1)?,
                expires_at: row.get(2)?,
                state: row.get(3)?,
            })
        })
        .optional()?;
    Ok(read.map(|row| {
        let answer = seen(&row);
        state.tails.set(path, row);
        answer
    }))
}

#[async_trait]
impl StreamStore for SqliteEngine {
    async fn stream_meta(&self, path: &str) -> Result<Option<StreamMeta>> {
        let path = path.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                tail_sql!(),
                ", expires_at, state, start FROM streams WHERE path = ?1"
            ))?
            .query_row([&path], |row| {
                Ok(StreamMeta {
                    path: path.clone(),
                    tail: stored_off(row, 0)?,
                    expires_at: row.get(1)?,
                    state: row.get(2)?,
                    start: stored_off(row, 3)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn create_stream_with_producers(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        producers: ProducerUpdate,
        durability: Durability,
    ) -> Result<bool> {
        let (meta, chunks) = (meta.clone(), chunks.to_vec());
        self.write(durability, move |conn| {
            let Some(id) = insert_stream(conn, &meta)? else {
                return Ok(false);
            };
            insert_chunks(conn, id, &chunks)?;
            insert_producers(conn, id, &producers)?;
            Ok(true)
        })
        .await
    }

    async fn create_fork(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        source: &ForkSource,
        durability: Durability,
    ) -> Result<bool> {
        let (meta, chunks, source) = (meta.clone(), chunks.to_vec(), source.clone());
        self.write(durability, move |conn| {
            crate::forks::create(conn, &meta, &chunks, &source)
        })
        .await
    }

    async fn delete_fork(
        &self,
        path: &str,
        source: &ForkSource,
        durability: Durability,
    ) -> Result<bool> {
        let (path, source) = (path.to_owned(), source.clone());
        self.write(durability, move |conn| {
            crate::forks::delete(conn, &path, &source)
        })
        .await
    }

    async fn stream_producer(&self, path: &str, id: &str) -> Result<Option<ProducerRecord>> {
        self.producer(path, id).await
    }

    async fn list_stream_producers(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProducerRecord>> {
        self.producers_page(path, after, limit).await
    }

    async fn commit_enqueue(
        &self,
        path: &str,
        expected_tail: u64,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
        durability: Durability,
    ) -> Result<CommitTicket> {
        let ticket = self
            .enqueue_commit(
                path,
                expected_tail,
                None,
                chunks,
                meta,
                producers,
                durability,
            )
            .await?;
        Ok(Box::pin(ticket))
    }

    async fn commit_checked(&self, w: CheckedWrite<'_>) -> Result<Commit> {
        let state = Some(w.expected_state.to_vec());
        let (chunks, meta) = (w.chunks.to_vec(), w.meta.clone());
        self.enqueue_commit(
            w.path,
            w.expected_tail,
            state,
            chunks,
            meta,
            w.producers,
            w.durability,
        )
        .await?
        .await
    }

    async fn read_chunks(
        &self,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StreamChunk>> {
        let path = path.to_owned();
        self.read(move |conn| {
            // One snapshot for the three statements (a deferred, read-only transaction).
            let tx = conn.unchecked_transaction()?;
            let Some(id) = stream_id(&tx, &path)? else {
                return Ok(Vec::new());
            };
            let from_i = i64::try_from(from).unwrap_or(i64::MAX);
            // The chunk containing `from` may start before it: start the scan there.
            let start: i64 = tx
                .prepare_cached(
                    "SELECT offset FROM stream_chunks WHERE stream = ?1 AND offset <= ?2
                     ORDER BY offset DESC LIMIT 1",
                )?
                .query_row(params![id, from_i], |row| row.get(0))
                .optional()?
                .unwrap_or(from_i);
            let mut stmt = tx.prepare_cached(
                "SELECT offset, data FROM stream_chunks WHERE stream = ?1 AND offset >= ?2
                 ORDER BY offset",
            )?;
            let mut rows = stmt.query(params![id, start])?;
            let mut out: Vec<StreamChunk> = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                if !out.is_empty() && bytes >= max_bytes {
                    break;
                }
                let chunk = StreamChunk {
                    offset: stored_off(row, 0)?,
                    data: row.get(1)?,
                };
                if chunk.end() <= from {
                    continue;
                }
                bytes = bytes.saturating_add(chunk.data.len());
                out.push(chunk);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_stream(&self, path: &str, durability: Durability) -> Result<bool> {
        let path = path.to_owned();
        self.write(durability, move |conn| {
            let Some(id) = stream_id(conn, &path)? else {
                return Ok(false);
            };
            delete_rows(conn, id)?;
            Ok(true)
        })
        .await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>> {
        // The same half-open range walk of the `path` index as `list_objects` (see there).
        let (lower_op, lower) = match after {
            Some(after) if after >= prefix => (">", after.to_owned()),
            _ => (">=", prefix.to_owned()),
        };
        let upper = prefix_end(prefix);
        let sql = format!(
            "SELECT path FROM streams WHERE path {lower_op} ?1 {} ORDER BY path LIMIT ?2",
            if upper.is_some() { "AND path < ?3" } else { "" }
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let path = |row: &rusqlite::Row<'_>| row.get::<_, String>(0);
            let rows = match &upper {
                Some(upper) => stmt.query_map(params![lower, limit(max), upper], path)?,
                None => stmt.query_map(params![lower, limit(max)], path)?,
            };
            rows.collect()
        })
        .await
    }

    async fn expired_streams(&self, now: Millis, max: usize) -> Result<Vec<String>> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT path FROM streams WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
            )?
            .query_map(params![now, limit(max)], |row| row.get(0))?
            .collect()
        })
        .await
    }

    async fn segments(&self, path: &str) -> Result<Vec<SegmentRef>> {
        let path = path.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT g.start, g.end, g.object_key FROM streams s
                 JOIN stream_segments g ON g.stream = s.id
                 WHERE s.path = ?1 ORDER BY g.start",
            )?
            .query_map([&path], |row| {
                Ok(SegmentRef {
                    start: stored_off(row, 0)?,
                    end: stored_off(row, 1)?,
                    object_key: row.get(2)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn seal_segment(
        &self,
        path: &str,
        segment: &SegmentRef,
        durability: Durability,
    ) -> Result<bool> {
        let (path, segment) = (path.to_owned(), segment.clone());
        self.write(durability, move |conn| {
            let Some(id) = stream_id(conn, &path)? else {
                return Ok(false);
            };
            let (start, end) = (
                off("segment start", segment.start)?,
                off("segment end", segment.end)?,
            );
            // Where the sealed range ends: the last segment's end, else the first hot chunk.
            let sealed_end: Option<i64> = conn
                .prepare_cached(
                    "SELECT coalesce(
                       (SELECT max(end) FROM stream_segments WHERE stream = ?1),
                       (SELECT min(offset) FROM stream_chunks WHERE stream = ?1))",
                )?
                .query_row([id], |row| row.get(0))?;
            if sealed_end != Some(start) {
                return Ok(false);
            }
            conn.prepare_cached(
                "INSERT INTO stream_segments (stream, start, end, object_key)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, start, end, segment.object_key])?;
            keep_tail(conn, id)?;
            // The range bounds the scan to the segment's keys; the length test keeps a chunk
            // that straddles `end` (`length()` of a blob reads no overflow pages).
            conn.prepare_cached(
                "DELETE FROM stream_chunks WHERE stream = ?1 AND offset >= ?2 AND offset < ?3
                   AND offset + length(data) <= ?3",
            )?
            .execute(params![id, start, end])?;
            Ok(true)
        })
        .await
    }

    async fn trim_stream(
        &self,
        path: &str,
        before: u64,
        max_chunks: usize,
        expected_state: Option<&[u8]>,
        durability: Durability,
    ) -> Result<Option<Trimmed>> {
        let path = path.to_owned();
        let expected = expected_state.map(<[u8]>::to_vec);
        self.write(durability, move |conn| {
            // The start and the deletions are one savepoint of the writer's transaction, so a
            // kill -9 keeps both or neither. The row keeps the tail: the deletions may take
            // the last chunk (both expressions see the row and chunks as they were).
            let found: Option<(i64, i64)> = conn
                .prepare_cached(concat!(
                    "UPDATE streams SET tail = ",
                    tail_sql!(),
                    ", start = max(start, min(?2, ",
                    tail_sql!(),
                    ")) WHERE path = ?1 AND (?3 IS NULL OR state = ?3) RETURNING id, start"
                ))?
                .query_row(
                    params![path, off("trim offset", before)?, expected],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((id, start)) = found else {
                return Ok(None);
            };
            // Lowest chunks first, one more than the batch to learn whether more remain. The
            // length test keeps a chunk that straddles the start.
            let below: Vec<i64> = conn
                .prepare_cached(
                    "SELECT offset FROM stream_chunks WHERE stream = ?1 AND offset < ?2
                       AND offset + length(data) <= ?2 ORDER BY offset LIMIT ?3",
                )?
                .query_map(
                    params![id, start, limit(max_chunks.saturating_add(1))],
                    |row| row.get(0),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let chunks = below.len().min(max_chunks);
            if let Some(last) = below[..chunks].last() {
                conn.prepare_cached(
                    "DELETE FROM stream_chunks WHERE stream = ?1 AND offset <= ?2",
                )?
                .execute(params![id, last])?;
            }
            let segments: Vec<SegmentRef> = conn
                .prepare_cached(
                    "DELETE FROM stream_segments WHERE stream = ?1 AND end <= ?2
                     RETURNING start, end, object_key",
                )?
                .query_map(params![id, start], |row| {
                    Ok(SegmentRef {
                        start: stored_off(row, 0)?,
                        end: stored_off(row, 1)?,
                        object_key: row.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut segments = segments;
            segments.sort_by_key(|g| g.start);
            Ok(Some(Trimmed {
                start: u64::try_from(start).unwrap_or(0),
                chunks,
                more: below.len() > chunks,
                segments,
            }))
        })
        .await
    }

    async fn drop_chunks(&self, path: &str, offsets: &[u64], d: Durability) -> Result<bool> {
        let (path, offsets) = (path.to_owned(), offsets.to_vec());
        self.write(d, move |conn| {
            crate::compaction::drop_chunks(conn, &path, &offsets)
        })
        .await
    }
}

impl SqliteEngine {
    /// Queues a commit's compare-and-set (tail, and state when given) and write.
    #[allow(clippy::too_many_arguments)] // `commit_checked`'s arguments
    async fn enqueue_commit(
        &self,
        path: &str,
        expected_tail: u64,
        expected_state: Option<Vec<u8>>,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
        durability: Durability,
    ) -> Result<impl std::future::Future<Output = Result<Commit>> + Send + 'static> {
        let path = path.to_owned();
        // The writer's queue is FIFO and the compare-and-set runs inside the writer, so the
        // order is fixed once the command is queued.
        let commit = move |conn: &Connection, state: &mut WriterState<'_>| {
            // The compare and the set are one command of the writer: nothing runs between.
            let expected = off("expected tail", expected_tail)?;
            let known = match expected_state {
                None => remembered_row(state, &path, &meta)?,
                // The state blob is read only when it is compared.
                Some(ref wanted) => stored_row(conn, &path)?
                    .filter(|(_, _, stored)| stored == wanted)
                    .map(|(id, tail, _)| (id, tail, false)),
            };
            let (id, unchanged) = match known {
                Some((id, stored, unchanged)) if stored == expected => (id, unchanged),
                _ => return Ok(Commit::Conflict),
            };
            for c in &chunks {
                let offset = off("chunk offset", c.offset)?;
                state.insert_chunk.execute(params![id, offset, c.data])?;
            }
            let tail = off("tail", meta.tail)?;
            if !unchanged {
                let update = params![id, tail, meta.expires_at, meta.state];
                state.update_stream.execute(update)?;
            }
            apply_producers(conn, id, &producers)?;
            // The row holds the commit's expiry and state now (written, or already equal).
            match state.tails.get_mut(&path).filter(|row| row.id == id) {
                Some(row) => {
                    row.tail = tail;
                    if !unchanged {
                        row.expires_at = meta.expires_at;
                        row.state.clone_from(&meta.state);
                    }
                }
                None => state.tails.set(
                    &path,
                    Row {
                        id,
                        tail,
                        expires_at: meta.expires_at,
                        state: meta.state.clone(),
                    },
                ),
            }
            Ok(Commit::Written)
        };
        self.enqueue_work(durability, Again(commit)).await
    }
}
