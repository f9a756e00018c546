//! The realtime bus: what the realtime hub needs from an engine to run on several nodes.
//!
//! A channel's messages must get one order and one offset sequence across every node, and a
//! client that reconnects to another node must be able to recover what it missed; frames for
//! a user (seed frames, closes, revocations) must reach that user's sockets wherever they are.
//! So the bus does exactly two things: **publish** a message to a channel (assigning the next
//! offset under the channel's epoch, keeping it in a capped history, and delivering it to
//! every node's listeners in offset order) and **signal** an opaque payload to every node.
//! Which node holds which socket, presence and protocol rules stay in the hub.
//!
//! Engines: the in-process [`MemoryBus`](crate::memory::MemoryBus) (one node; listeners are
//! called synchronously) and the Redis engine's bus (one Lua script per publish, pub/sub to
//! every node).

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Millis, Result};

/// How much history a channel keeps, and how long an unused channel lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Always keep at least this many newest messages.
    pub keep: usize,
    /// Also keep every message younger than this (ms).
    pub window_ms: Millis,
    /// Never keep more than this many.
    pub max: usize,
    /// A channel neither published on nor read for this long (ms) is forgotten: its history
    /// goes and its next use starts a new epoch.
    pub ttl_ms: Millis,
}

/// One message of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusMessage {
    /// The channel.
    pub channel: String,
    /// The channel's epoch when it was published.
    pub epoch: String,
    /// Its offset (1, 2, 3, … per epoch).
    pub offset: u64,
    /// Publish time (the publisher's clock, unix ms).
    pub ts: Millis,
    /// The publisher's payload, as given.
    pub payload: String,
}

/// What a node's listener receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// A message published on a channel (by any node, this one included), in offset order
    /// per channel.
    Message(BusMessage),
    /// A payload signalled by any node (this one included).
    Signal(String),
    /// The node's delivery path was (re)established: events may have been missed before it,
    /// so channel positions must be checked again.
    Resync,
}

/// Receives this node's deliveries. Called from the engine's delivery task (or, in process,
/// from the publishing call): it must not block.
pub trait BusListener: Send + Sync + 'static {
    /// One delivery.
    fn deliver(&self, event: &BusEvent);
}

/// A channel's position and the messages kept after a given offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The channel's epoch (created by this read when the channel had none).
    pub epoch: String,
    /// The latest offset (0 when nothing was published in this epoch).
    pub top: u64,
    /// The kept messages after the requested offset, in order (possibly not starting right
    /// after it when older ones were trimmed).
    pub messages: Vec<BusMessage>,
}

impl History {
    /// True when `messages` are exactly every message after `after` in `epoch`.
    pub fn covers(&self, epoch: &str, after: u64) -> bool {
        epoch == self.epoch
            && after <= self.top
            && (after == self.top || self.messages.first().is_some_and(|m| m.offset == after + 1))
    }
}

/// The cluster-wide channel log and node fan-out of the realtime hub.
#[async_trait]
pub trait RealtimeBus: Send + Sync {
    /// Appends `payload` to `channel` with the next offset (creating the channel's epoch from
    /// `new_epoch` if it has none), trims the history to `limits`, and delivers the message
    /// to every node's listeners. Returns the epoch and the offset.
    async fn publish(
        &self,
        channel: &str,
        payload: &str,
        new_epoch: &str,
        now: Millis,
        limits: &HistoryLimits,
    ) -> Result<(String, u64)>;

    /// The channel's epoch (created from `new_epoch` if absent), its latest offset, and the
    /// kept messages after `after`. Counts as a use of the channel (its TTL restarts).
    async fn history(
        &self,
        channel: &str,
        after: u64,
        new_epoch: &str,
        now: Millis,
        limits: &HistoryLimits,
    ) -> Result<History>;

    /// Delivers `payload` to every node's listeners as a [`BusEvent::Signal`].
    async fn signal(&self, payload: &str) -> Result<()>;

    /// Adds a listener of this node's deliveries (it gets a [`BusEvent::Resync`] whenever the
    /// engine's delivery path is (re)established, the first time included).
    fn listen(&self, listener: Arc<dyn BusListener>);
}
