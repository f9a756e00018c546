//! The outbox: events a capability records atomically with the change they describe.
//!
//! Why: a security event ("session revoked") must never be lost for a change that was
//! acknowledged, yet the session store and the streams the events end up in are different
//! tables (SQLite) or different hash slots (Redis Cluster), which no single atomic step spans.
//! So the session operations take an optional event, opaque bytes, and the engine writes it
//! into its outbox in the same transaction (SQLite) or script (Redis) as the change; a relay
//! in the capability that owns the destination reads the outbox, delivers, then removes what
//! it delivered. A crash between delivery and removal delivers again, so every queued event
//! has a permanent place (`OutboxItem::queue`, `OutboxItem::position`) by which the
//! destination can refuse the second copy.
//!
//! Events that record no storage change (a socket closed, a grant issued) are pushed with
//! [`Outbox::outbox_push`] so that they reach their destination by the same path and in order
//! with the others.
//!
//! The relay lease: on an engine several processes share (Redis), every node runs a relay over
//! the one outbox. Relays that read the same events and write the same streams stay correct
//! (the destination refuses second copies) but keep refusing each other, which costs every
//! node round trips per event. So a relay moves events only while it holds the engine's
//! relay lease ([`Outbox::outbox_lease`]): one holder at a time, renewed by each of its
//! passes, expiring after its TTL when the holder dies (another node then takes it over).
//! Engines one process owns (SQLite, memory) have one relay and always grant it.
//!
//! Routed events: an engine that also stores streams can write part of an event straight into
//! its streams, in the transaction of the change it records ([`Outbox::outbox_route`]), and
//! queue only the rest. Why: the relay's trip (an outbox row, a read, an append request per
//! stream and pass through the streams capability, a producer row, a second commit) cost about
//! as much as the change itself; written in the change's own commit, a copy is exactly once
//! and in the order of the changes by construction. The capability decides what goes where
//! ([`OutboxRoute`]); the engine only appends the bytes it is given at the stream's stored
//! tail, creating the stream from the given metadata when it is missing, and tells the
//! streams' readers through its [`crate::StreamWakes`] once the commit is durable.

use async_trait::async_trait;

use std::sync::Arc;

use crate::{Durability, Result, StreamMeta};

/// What an [`OutboxRoute`] makes of one event.
#[derive(Default)]
pub struct Routed {
    /// Stream appends the engine writes in the event's own transaction, in order.
    pub appends: Vec<RoutedAppend>,
    /// What is queued in the outbox for the relay (`None`: nothing).
    pub queue: Option<Vec<u8>>,
    /// Run once the event's write is answered (committed, and durable), never if it fails:
    /// where the route remembers what it read or created through [`RouteObjects`] (a cache
    /// filled inside the transaction could outlive a rollback).
    pub committed: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Routed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routed")
            .field("appends", &self.appends)
            .field("queue", &self.queue)
            .field("committed", &self.committed.is_some())
            .finish()
    }
}

/// Object state (as [`crate::ObjectStore`] keeps it) read and created inside the transaction
/// of the event an [`OutboxRoute`] splits: what the route needs to know to write an event
/// (the security route's per-user secrets) commits with it, and no other write can come
/// between the read and the create.
pub trait RouteObjects {
    /// The state of object `(kind, key)`, if any.
    fn load(&mut self, kind: &str, key: &str) -> Result<Option<Vec<u8>>>;
    /// Creates object `(kind, key)` with `state` unless it exists: false (and the stored
    /// state kept) when it does.
    fn create(&mut self, kind: &str, key: &str, state: &[u8]) -> Result<bool>;
}

/// One message appended to a stream by the engine, at the stream's stored tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedAppend {
    /// The stream's path.
    pub path: String,
    /// The bytes appended as one chunk (in the streams capability's chunk format).
    pub data: Vec<u8>,
}

/// Decides, per event, what an engine writes into streams in the event's transaction and
/// what it queues. Called inside the engine's write (keep it cheap and free of I/O but for
/// the [`RouteObjects`] it is given).
pub trait OutboxRoute: Send + Sync {
    /// The appends and the queued rest of `event`; `objects` reads and creates objects in
    /// the event's transaction.
    fn split(&self, event: &[u8], objects: &mut dyn RouteObjects) -> Routed;

    /// The metadata of the stream at `path` when an append finds none (the engine creates it
    /// first; its `tail` and `start` are ignored: a new stream starts empty at 0). An error
    /// fails the write the event belongs to.
    fn new_stream(&self, path: &str) -> Result<StreamMeta>;
}

/// One queued event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// Engine-defined handle, passed back to [`Outbox::outbox_remove`].
    pub key: String,
    /// The event as the capability encoded it.
    pub data: Vec<u8>,
    /// The queue the event is in: a short stable name (engines with one queue name it
    /// once; Redis names the slot's queue).
    pub queue: String,
    /// The event's place in its queue: strictly increasing in queue order and never reused,
    /// not after removals and not after a restart, and below 2^53 (a JSON-safe integer).
    /// `(queue, position)` names the event for good, so a relay can make its delivery
    /// idempotent by it (the security relay uses it as a Durable Streams producer's epoch).
    /// `None` where the engine cannot name it (delivery of that event is then at least once).
    pub position: Option<u64>,
    /// True on the last event a read returned from its queue when the read stopped there for
    /// its limit: later events of the queue may exist that this read did not return. A relay
    /// that merges queues by time must not deliver another queue's later events before it
    /// has read those (see [`Outbox::outbox_read`]).
    pub more_in_queue: bool,
}

impl OutboxItem {
    /// Marks the last of `items` as cut short by a read `limit` when the read returned that
    /// many (engines with one queue).
    pub fn mark_limit(items: &mut [OutboxItem], limit: usize) {
        if items.len() >= limit {
            if let Some(last) = items.last_mut() {
                last.more_in_queue = true;
            }
        }
    }
}

/// Storage for queued events.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Queues `events`, in order.
    async fn outbox_push(&self, events: Vec<Vec<u8>>, durability: Durability) -> Result<()>;

    /// About `limit` queued events, oldest first within a queue. Engines may keep several
    /// queues (Redis: one per cluster slot, next to the sessions): the events of one session
    /// are always in one queue, in order. A read returns a prefix of every queue it reads
    /// (the last event of a cut prefix says so: [`OutboxItem::more_in_queue`]); an engine
    /// with several queues reads every queue that holds events, as one snapshot where it can
    /// (Redis standalone: an event in the read means every event written before it was
    /// acknowledged is in it too, or in a cut queue's unread rest), so that two changes one
    /// after the other, in different queues, are never read as the second without the first.
    async fn outbox_read(&self, limit: usize) -> Result<Vec<OutboxItem>>;

    /// Removes delivered events by their keys (unknown keys are ignored).
    async fn outbox_remove(&self, keys: &[String]) -> Result<()>;

    /// Takes the relay lease for `holder`, or renews it if `holder` holds it, for `ttl_ms`
    /// from now: true while `holder` holds it, false while another holder's lease runs.
    /// The default, for engines one process owns, always grants it.
    async fn outbox_lease(&self, holder: &str, ttl_ms: u64) -> Result<bool> {
        let _ = (holder, ttl_ms);
        Ok(true)
    }

    /// Gives the relay lease up if `holder` holds it (another holder's lease is left alone),
    /// so that another node takes it over at once instead of after the TTL.
    async fn outbox_lease_release(&self, holder: &str) -> Result<()> {
        let _ = holder;
        Ok(())
    }

    /// Routes every later event (of session operations and [`Outbox::outbox_push`]) through
    /// `route`: its appends are written in the event's transaction (durably before the write
    /// is answered, whatever durability was asked for) and announced to the engine's
    /// [`crate::StreamWakes`] listeners after the commit, and only its `queue` goes into the
    /// outbox. True if the engine routes from now on; false (the default: engines whose
    /// streams live elsewhere, or whose relay must stay the only writer, as on Redis) when
    /// every event keeps being queued whole. A second route replaces none: false.
    fn outbox_route(&self, route: Arc<dyn OutboxRoute>) -> bool {
        let _ = route;
        false
    }
}
