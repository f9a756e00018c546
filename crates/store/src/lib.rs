//! Storage traits of sessiond: the contract between capabilities and engines.
//!
//! Capabilities (sessions, streams, middleware, realtime) never name an engine; they hold
//! `Arc<dyn Trait>` handles to the narrow traits defined here. Engines (SQLite, Redis, and the
//! in-memory [`memory::MemoryEngine`]) implement every trait, and each trait has one shared
//! behavioural test suite ([`testsuite`], feature `testsuite`) that every engine runs, so "same
//! behaviour on every engine" is checked, not hoped for.
//!
//! Module map:
//! - [`sessions`]: session records with idle + absolute expiry, per-user index, compare-and-set.
//! - [`cache`]: namespaced TTL cache entries.
//! - [`erasures`]: the erasure list (hashed ids of erased users).
//! - [`objects`]: the object runtime's persisted object state and alarms.
//! - [`outbox`]: events recorded atomically with session changes, relayed at least once.
//! - [`streams`]: Durable Streams logs and metadata, with the cold-segment index.
//! - [`realtime`]: the realtime hub's cluster-wide channel log and node fan-out.
//! - [`presence`]: the realtime hub's cluster-wide presence (leased set membership).
//! - [`memory`]: the in-memory engine (tests, `--engine memory`).
//! - [`testsuite`]: the shared engine suite.
//!
//! Layering, bottom → top: the trait modules (their records and traits) → [`memory`] (an
//! engine over them) → [`testsuite`], whose per-trait files share fixtures from files below
//! them (`testsuite/stream_fixtures.rs` for the stream checks) rather than from the stream
//! suite that runs them.
//!
//! Time is always passed in by the caller as unix milliseconds ([`Millis`]), so engines never
//! read a clock: expiry decisions are deterministic and testable.

pub mod cache;
pub mod erasures;
pub mod memory;
pub mod merge;
pub mod objects;
pub mod outbox;
pub mod presence;
pub mod realtime;
pub mod sessions;
pub mod streams;
#[cfg(feature = "testsuite")]
pub mod testsuite;

use std::sync::Arc;

pub use cache::{reserved_namespace, CacheEntry, CachePut, CacheStore};
pub use erasures::{erasure_hash, ErasureStore};
pub use objects::{AlarmRecord, ObjectStore};
pub use outbox::{Outbox, OutboxItem, OutboxRoute, RouteObjects, Routed, RoutedAppend};
pub use presence::{Expired, Joined, Left, PresenceMember, PresenceStore};
pub use realtime::{BusEvent, BusListener, BusMessage, History, HistoryLimits, RealtimeBus};
pub use sessions::{
    changed_keys, Cas, DataChange, DataEvent, DataUpdate, DataWrite, Deletion, EventFor, EventPart,
    RecordWrite, Rotation, SessionOrigin, SessionRecord, SessionStore,
};
pub use streams::{
    Appended, CheckedCommit, CheckedWrite, Commit, CommitTicket, ForkSource, ProducerBefore,
    ProducerRecord, ProducerUpdate, SealLease, SegmentRef, StreamChunk, StreamMeta, StreamStore,
    StreamWake, StreamWakes, Trimmed, WakeSink,
};

/// Unix time in milliseconds.
pub type Millis = i64;

/// Current wall-clock time in unix milliseconds.
pub fn now_ms() -> Millis {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// When a write may be acknowledged.
///
/// `Confirmed` is the Durable Objects "output gate": the call returns only once the write is
/// durable by the engine's definition (SQLite: fsynced; Redis: accepted by the server, durable
/// per its AOF setting). `Unconfirmed` returns once the write is visible to readers but before
/// it is synced; a crash may lose it. Callers opt in explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge after the write is durable (the default).
    #[default]
    Confirmed,
    /// Acknowledge once visible; the sync may still be pending.
    Unconfirmed,
}

/// Errors an engine can report. Client mistakes never reach this layer: capabilities validate
/// input before calling a store, so every variant here is a server-side condition.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine cannot be reached or refused the operation (I/O, connection, shutdown).
    #[error("storage engine unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Operational surface every engine offers to the server (health, shutdown).
#[async_trait::async_trait]
pub trait EngineAdmin: Send + Sync {
    /// Short engine name for logs and metrics (`sqlite`, `redis`, `memory`).
    fn name(&self) -> &'static str;
    /// True when no other process can write this engine's data while it is open (the SQLite
    /// engine locks its data directory; the memory engine is private). Capabilities may then
    /// keep object state in memory across requests; on a shared engine (Redis, several nodes)
    /// they must re-read the store.
    fn exclusive(&self) -> bool;
    /// Checks that the engine answers; used by `/readyz`.
    async fn ping(&self) -> Result<()>;
    /// Flushes pending writes and stops background work; later calls fail with `Unavailable`.
    async fn close(&self) -> Result<()>;
}

/// The handles an engine hands to the server, one per narrow trait.
#[derive(Clone)]
pub struct Stores {
    /// Session records.
    pub sessions: Arc<dyn SessionStore>,
    /// Namespaced cache.
    pub cache: Arc<dyn CacheStore>,
    /// Object runtime state and alarms.
    pub objects: Arc<dyn ObjectStore>,
    /// The erasure list.
    pub erasures: Arc<dyn ErasureStore>,
    /// Events recorded with session changes, waiting for their relay.
    pub outbox: Arc<dyn Outbox>,
    /// Durable Streams logs; `None` on engines that do not store streams.
    pub streams: Option<Arc<dyn StreamStore>>,
    /// Tail notifications from other processes sharing the engine (`None`: there are none).
    pub stream_wakes: Option<Arc<dyn StreamWakes>>,
    /// The cold tier's sealing lease among processes sharing the engine (`None`: one process).
    pub seal_lease: Option<Arc<dyn SealLease>>,
    /// The realtime hub's bus for engines shared by several nodes (`None`: one node, the
    /// hub keeps channels in its own memory).
    pub realtime: Option<Arc<dyn RealtimeBus>>,
    /// The realtime hub's presence for engines shared by several nodes (`None`: one node,
    /// presence follows this process's sockets).
    pub presence: Option<Arc<dyn PresenceStore>>,
    /// Health and shutdown.
    pub admin: Arc<dyn EngineAdmin>,
}

impl Stores {
    /// Builds the handle set from one engine value that implements every trait.
    pub fn from_engine<E>(engine: Arc<E>) -> Self
    where
        E: SessionStore + CacheStore + ObjectStore + ErasureStore + Outbox + EngineAdmin + 'static,
    {
        Stores {
            sessions: engine.clone(),
            cache: engine.clone(),
            objects: engine.clone(),
            erasures: engine.clone(),
            outbox: engine.clone(),
            streams: None,
            stream_wakes: None,
            seal_lease: None,
            realtime: None,
            presence: None,
            admin: engine,
        }
    }

    /// Adds the engine's stream storage.
    pub fn with_streams(mut self, streams: Arc<dyn StreamStore>) -> Self {
        self.streams = Some(streams);
        self
    }

    /// Adds the engine's tail notifications (shared engines).
    pub fn with_stream_wakes(mut self, wakes: Arc<dyn StreamWakes>) -> Self {
        self.stream_wakes = Some(wakes);
        self
    }

    /// Adds the engine's sealing lease (shared engines).
    pub fn with_seal_lease(mut self, lease: Arc<dyn SealLease>) -> Self {
        self.seal_lease = Some(lease);
        self
    }

    /// Adds the engine's realtime bus (shared engines).
    pub fn with_realtime(mut self, bus: Arc<dyn RealtimeBus>) -> Self {
        self.realtime = Some(bus);
        self
    }

    /// Adds the engine's realtime presence (shared engines).
    pub fn with_presence(mut self, presence: Arc<dyn PresenceStore>) -> Self {
        self.presence = Some(presence);
        self
    }
}
