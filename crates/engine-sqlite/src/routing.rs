//! Routed events (`Outbox::outbox_route`): the parts of an event that the capability wants in
//! a stream are appended in the transaction of the change the event records, and only the
//! rest is queued in the outbox.
//!
//! Why here and not through the streams capability: the writer already holds the one
//! transaction the change commits in, so an append there costs a chunk row (not the stream's
//! row: the chunk's end is the tail, `stream_rows::tail_sql`), is exactly once and lands in
//! commit order, where the relay's trip cost an outbox row, a read, an append request through
//! the capability, a producer row and a second commit.
//!
//! The route reads and creates objects in that same transaction (`RouteObjects`: the security
//! route's per-user secrets, so a secret commits with the event that needed it), and what it
//! remembers of them it remembers through `Routed::committed`, run once the write is answered.
//!
//! A routed append uses the writer thread's memory of stream rows (`tails.rs`) as the
//! capability's own appends do: the stream's id and tail from memory when the writer knows
//! them (a returning user's stream, or the one the change before appended to), else one read
//! of the row, remembered; the tail it leaves is remembered. Why: the row's read was a fifth of
//! an append's work in the change's transaction, on the writer thread every change waits for.
//!
//! The capability's objects cache a stream's tail, so the appended paths are announced to the
//! engine's `StreamWakes` listeners once the write is answered; the capability reloads such
//! streams from the engine (it knows which: it chose the route). With a route, every queuing
//! write is confirmed (answered after its fsync), whatever durability its caller asked for:
//! the announcement then comes after the fsync, as a stream's readers are woken only for
//! durable bytes on every other path (docs/api.md, "durability"). Only a reader that happens
//! to reload such a stream between the commit and its fsync can see an event before it is
//! durable (docs/sessions.md, "Atomicity").

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rusqlite::{params, Connection};
use sessiond_store::{
    Durability, OutboxRoute, Result, RouteObjects, RoutedAppend, StreamMeta, StreamWake,
    StreamWakes, WakeSink,
};

use crate::error::{out_of_range, sql};
use crate::hot::WriterState;
use crate::objects::stored_state;
use crate::stream_rows::{insert_chunk, insert_stream, off};
use crate::streams::read_row;
use crate::tails::Row;
use crate::writer::Once;
use crate::SqliteEngine;

/// The engine's route (set once) and the listeners of the streams it appends to.
#[derive(Default)]
pub(crate) struct Routing {
    route: OnceLock<Arc<dyn OutboxRoute>>,
    sinks: Mutex<Vec<WakeSink>>,
}

/// What a write command queues: events into the outbox, or through the route.
pub(crate) struct Queuer<'a> {
    route: Option<&'a dyn OutboxRoute>,
    /// The writer's stream rows and statements.
    rows: &'a mut (dyn Rows + 'a),
    /// Paths appended to by this command.
    touched: Vec<String>,
    /// The route's [`Routed::committed`] of this command's events, in order.
    committed: Vec<Box<dyn FnOnce() + Send>>,
}

impl Queuer<'_> {
    /// Queues `event` (if any) in the current transaction, or routes it.
    pub(crate) fn queue(
        &mut self,
        conn: &Connection,
        event: Option<&[u8]>,
    ) -> rusqlite::Result<()> {
        let Some(event) = event else {
            return Ok(());
        };
        let Some(route) = self.route else {
            return insert(conn, event);
        };
        let routed = route.split(event, &mut Objects(conn));
        self.committed.extend(routed.committed);
        for append in &routed.appends {
            if append_at_tail(conn, &mut *self.rows, route, append)? {
                self.touched.push(append.path.clone());
            }
        }
        match routed.queue {
            Some(rest) => insert(conn, &rest),
            None => Ok(()),
        }
    }
}

/// The `objects` table in the writer's transaction, for the route.
struct Objects<'a>(&'a Connection);

impl RouteObjects for Objects<'_> {
    fn load(&mut self, kind: &str, key: &str) -> Result<Option<Vec<u8>>> {
        stored_state(self.0, kind, key).map_err(sql)
    }

    fn create(&mut self, kind: &str, key: &str, state: &[u8]) -> Result<bool> {
        let created = self
            .0
            .prepare_cached(
                "INSERT INTO objects (kind, key, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, key) DO NOTHING",
            )
            .and_then(|mut stmt| stmt.execute(params![kind, key, state]))
            .map_err(sql)?;
        Ok(created > 0)
    }
}

fn insert(conn: &Connection, event: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO outbox (data) VALUES (?1)")?
        .execute(params![event])?;
    Ok(())
}

/// What a routed append uses of the writer thread's state (`WriterState`): its memory of
/// stream rows and its prepared statements. A trait so that [`Queuer`] borrows the state
/// without naming the connection's lifetime.
trait Rows {
    /// The id and tail of the stream at `path`: remembered, else read (and remembered).
    fn id_and_tail(&mut self, path: &str) -> rusqlite::Result<Option<(i64, i64)>>;
    /// Inserts a chunk of stream `id` at `offset`.
    fn insert_chunk(&mut self, id: i64, offset: i64, data: &[u8]) -> rusqlite::Result<()>;
    /// The stream at `path` (id `id`) ends at `tail` now, in the open transaction.
    fn moved(&mut self, path: &str, id: i64, tail: i64);
    /// The stream at `path` was created with `row` in the open transaction.
    fn created(&mut self, path: &str, row: Row);
}

impl Rows for WriterState<'_> {
    fn id_and_tail(&mut self, path: &str) -> rusqlite::Result<Option<(i64, i64)>> {
        if let Some(row) = self.tails.get_mut(path) {
            return Ok(Some((row.id, row.tail)));
        }
        read_row(self, path, |row| (row.id, row.tail))
    }

    fn insert_chunk(&mut self, id: i64, offset: i64, data: &[u8]) -> rusqlite::Result<()> {
        self.insert_chunk
            .execute(params![id, offset, data])
            .map(|_| ())
    }

    fn moved(&mut self, path: &str, id: i64, tail: i64) {
        // Only the tail moved (the row itself is not written, see `append_at_tail`).
        match self.tails.get_mut(path) {
            Some(row) if row.id == id => row.tail = tail,
            _ => self.tails.forget(path),
        }
    }

    fn created(&mut self, path: &str, row: Row) {
        self.tails.set(path, row);
    }
}

/// Appends `a.data` as one chunk at the stored tail of `a.path`, creating the stream as
/// `route` says first when it has no row. False when there was nothing to append.
fn append_at_tail(
    conn: &Connection,
    rows: &mut dyn Rows,
    route: &dyn OutboxRoute,
    a: &RoutedAppend,
) -> rusqlite::Result<bool> {
    if a.data.is_empty() {
        return Ok(false);
    }
    let len = a.data.len() as u64;
    // The row is not written: the chunk's end is the stream's new tail (`tail_sql`), as for a
    // plain append of the streams capability.
    match rows.id_and_tail(&a.path)? {
        Some((id, tail)) => {
            // A negative tail would be a corrupt file (the CHECKs forbid it).
            let tail = u64::try_from(tail)
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(1, tail))?;
            // The new tail must be storable, as if it were written.
            let end = tail
                .checked_add(len)
                .ok_or_else(|| out_of_range("tail", u64::MAX))?;
            let (offset, end) = (off("chunk offset", tail)?, off("tail", end)?);
            rows.insert_chunk(id, offset, &a.data)?;
            rows.moved(&a.path, id, end);
        }
        // Created with its tail after the chunk.
        None => {
            let meta = route
                .new_stream(&a.path)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            let meta = StreamMeta {
                path: a.path.clone(),
                tail: len,
                start: 0,
                ..meta
            };
            // The read above found no row in this same transaction, so the insert cannot
            // meet one.
            let id = insert_stream(conn, &meta)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            insert_chunk(conn, id, 0, &a.data)?;
            let tail = off("tail", len)?;
            let (expires_at, state) = (meta.expires_at, meta.state);
            rows.created(
                &a.path,
                Row {
                    id,
                    tail,
                    expires_at,
                    state,
                },
            );
        }
    }
    Ok(true)
}

impl Routing {
    pub(crate) fn set(&self, route: Arc<dyn OutboxRoute>) -> bool {
        self.route.set(route).is_ok()
    }

    fn wake(&self, paths: &[String]) {
        if paths.is_empty() {
            return;
        }
        let sinks = self
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for sink in &sinks {
            for path in paths {
                sink(StreamWake::Changed(path));
            }
        }
    }
}

impl SqliteEngine {
    /// A write command that queues events (through [`Queuer::queue`]). With a route, the
    /// write is confirmed (see the module docs) and the paths it appended to are announced
    /// once it is.
    pub(crate) async fn write_queuing<T, F>(&self, durability: Durability, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Queuer<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let route = self.routing.route.get().cloned();
        let durability = if route.is_some() {
            Durability::Confirmed
        } else {
            durability
        };
        // It writes no stream table but for the routed appends, which keep the writer's
        // memory of their streams' rows true (`Rows`); every other stream it remembers stays
        // (`tails.rs`). A failed command is rolled back and the writer then forgets them all.
        let work = move |conn: &Connection, state: &mut WriterState<'_>| {
            let mut q = Queuer {
                route: route.as_deref(),
                rows: state,
                touched: Vec::new(),
                committed: Vec::new(),
            };
            let value = work(conn, &mut q);
            Ok((value?, q.touched, q.committed))
        };
        let (value, touched, committed) = self
            .enqueue_work(durability, Once(Some(work)))
            .await?
            .await?;
        committed.into_iter().for_each(|done| done());
        self.routing.wake(&touched);
        Ok(value)
    }
}

/// The listeners of routed appends (the engine's only writer of its streams besides the
/// capability itself).
impl StreamWakes for SqliteEngine {
    fn listen(&self, sink: WakeSink) {
        self.routing
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sink);
    }
}
