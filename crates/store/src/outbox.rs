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

use async_trait::async_trait;

use crate::{Durability, Result};

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
}
