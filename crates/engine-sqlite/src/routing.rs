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
//! The capability's objects cache a stream's tail, so the appended paths are announced to the
//! engine's `StreamWakes` listeners once the write is answered; the capability reloads such
//! streams from the engine (it knows which: it chose the route). With a route, every queuing
//! write is confirmed (answered after its fsync), whatever durability its caller asked for:
//! the announcement then comes after the fsync, as a stream's readers are woken only for
//! durable bytes on every other path (docs/api.md, "durability"). Only a reader that happens
//! to reload such a stream between the commit and its fsync can see an event before it is
//! durable (docs/sessions.md, "Atomicity").

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rusqlite::{params, Connection, OptionalExtension};
use sessiond_store::{
    Durability, OutboxRoute, Result, RouteObjects, RoutedAppend, StreamMeta, StreamWake,
    StreamWakes, WakeSink,
};

use crate::error::{out_of_range, sql};
use crate::hot::WriterState;
use crate::objects::stored_state;
use crate::stream_rows::{insert_chunk, insert_stream, off, tail_sql};
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
            if append_at_tail(conn, route, append)? {
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

/// Appends `a.data` as one chunk at the stored tail of `a.path`, creating the stream as
/// `route` says first when it has no row. False when there was nothing to append.
fn append_at_tail(
    conn: &Connection,
    route: &dyn OutboxRoute,
    a: &RoutedAppend,
) -> rusqlite::Result<bool> {
    if a.data.is_empty() {
        return Ok(false);
    }
    let found: Option<(i64, i64)> = conn
        .prepare_cached(concat!(
            "SELECT id, ",
            tail_sql!(),
            " FROM streams WHERE path = ?1"
        ))?
        .query_row([&a.path], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let len = a.data.len() as u64;
    // The row is not written: the chunk's end is the stream's new tail (`tail_sql`), as for a
    // plain append of the streams capability.
    let (id, offset) = match found {
        Some((id, tail)) => {
            // A negative tail would be a corrupt file (the CHECKs forbid it).
            let tail = u64::try_from(tail)
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(1, tail))?;
            // The new tail must be storable, as if it were written.
            let end = tail
                .checked_add(len)
                .ok_or_else(|| out_of_range("tail", u64::MAX))?;
            off("tail", end)?;
            (id, tail)
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
            (id, 0)
        }
    };
    insert_chunk(conn, id, offset, &a.data)?;
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
        // It writes no stream table but for the routed appends, whose paths the writer
        // forgets (their tails moved); it keeps every other stream it remembers (`tails.rs`).
        let work = move |conn: &Connection, state: &mut WriterState<'_>| {
            let mut q = Queuer {
                route: route.as_deref(),
                touched: Vec::new(),
                committed: Vec::new(),
            };
            let value = work(conn, &mut q);
            // Failed: the writer forgets every stream when it rolls the command back.
            q.touched.iter().for_each(|path| state.tails.forget(path));
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
