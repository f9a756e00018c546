//! What the Durable Streams capability needs from storage: an append-only log per stream plus
//! its metadata, changed together atomically.
//!
//! A stream is addressed by its path. Its data is a sequence of chunks, each stored at the
//! offset of its first byte (offsets are capability-defined `u64` positions, strictly
//! increasing, `chunk.offset + chunk.data.len()` = the next chunk's offset), so a catch-up read
//! is a range scan from an offset. Everything else the protocol keeps per stream (content type,
//! TTL, closure, producer states, fork links, soft deletion) is the capability's own encoding
//! in [`StreamMeta::state`]; the engine only reads the few fields it needs to index.
//!
//! Atomicity: [`StreamStore::commit`] writes chunks and the new metadata in one step, guarded
//! by the expected tail, so "append + close + producer sequence update" is never half-done and
//! a writer that lost a race (another node) learns it instead of corrupting the log.
//!
//! Pipelining: a commit has two phases, [`StreamStore::commit_enqueue`] (fixes the commit's
//! place in the engine's order and returns) and the returned [`CommitTicket`] (resolves once
//! the commit was applied and, per its `Durability`, made durable). The capability enqueues
//! under its per-stream lock and awaits the ticket after releasing it, so many appends to one
//! stream share one engine commit. The tail check makes the chain safe: if one commit fails,
//! every commit enqueued after it on the same stream expects a tail that was never written and
//! fails too (`Conflict`), so nothing is appended out of order or after a gap.
//!
//! Idempotent producers: each producer's state is its own row ([`ProducerRecord`], keyed by
//! stream and producer id), written by the same commit as the data it admits
//! ([`ProducerUpdate`]) and read one at a time ([`StreamStore::stream_producer`], the append
//! path) or page by page in id order ([`StreamStore::list_stream_producers`], operators). Keeping
//! them out of [`StreamMeta::state`] makes an append write O(1) bytes however many producers
//! a stream has; the per-commit cap ([`ProducerUpdate::max_producers`]) bounds their number,
//! the engine evicting the least recently used.
//!
//! Forks: [`StreamStore::create_fork`] creates a stream and [`StreamStore::delete_fork`]
//! deletes one, each rewriting the source's state (the capability's fork reference count)
//! in the same transaction, so a crash can never leave a source counting a fork that does not
//! exist. The source's tail is neither checked nor written (see [`ForkSource`]), so appends to
//! the source (from any node) never make a fork fail.
//!
//! Cold storage: sealed ranges of a stream can move to object storage. The engine keeps the
//! segment index ([`SegmentRef`]); [`StreamStore::seal_segment`] records a segment and drops
//! the hot chunks it covers in one step. Reads of sealed ranges go to the object store (the
//! capability does that); the engine's `read_chunks` returns only hot chunks.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Durability, Millis, Result};

/// Metadata of one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// The stream's path (its name).
    pub path: String,
    /// Offset after the last byte (where the next chunk goes).
    pub tail: u64,
    /// The retained start: data below it was trimmed away for good (see
    /// [`StreamStore::trim_stream`]). Engine-managed: set from `meta.start` when a stream is
    /// created, raised only by `trim_stream`; commits leave the stored value alone whatever
    /// their `meta.start`, so a writer holding an older copy never lowers it.
    #[serde(default)]
    pub start: u64,
    /// When the stream stops existing, if it expires (absolute, or sliding as last refreshed);
    /// indexed so expired streams can be found.
    pub expires_at: Option<Millis>,
    /// The capability's encoding of everything else (content type, TTL, closure, producers,
    /// forks, soft deletion...). Opaque to engines.
    pub state: Vec<u8>,
}

/// A stored piece of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamChunk {
    /// Offset of its first byte.
    pub offset: u64,
    /// Its bytes.
    pub data: Vec<u8>,
}

impl StreamChunk {
    /// Offset after its last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// An immutable range of a stream that lives in object storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// First offset covered.
    pub start: u64,
    /// Offset after the last byte covered.
    pub end: u64,
    /// Object-store key of the segment file.
    pub object_key: String,
}

/// One idempotent producer of a stream, stored in its own row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerRecord {
    /// The producer's id (unique per stream).
    pub id: String,
    /// The capability's encoding of the producer's position. Opaque to engines.
    pub state: Vec<u8>,
    /// When the producer last had a write accepted (unix ms): the eviction order.
    pub used_at: Millis,
}

/// The producer rows a commit writes, atomically with its chunks and metadata.
///
/// Engines apply it after the chunks: every record of `upsert` replaces the row with the same
/// id (or is inserted); then, if `max_producers > 0` and the stream has more rows than that,
/// the surplus rows with the smallest `(used_at, id)` are deleted, never a row this commit
/// upserted. Deleting a stream deletes its producer rows; a new stream (fork or not) has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerUpdate {
    /// Rows to insert or replace, by id.
    pub upsert: Vec<ProducerRecord>,
    /// Most rows the stream keeps after this commit (0 = no limit).
    pub max_producers: usize,
}

/// The source side of [`StreamStore::create_fork`] and [`StreamStore::delete_fork`]: the
/// source's new state (its fork reference count changed) and what it must still be.
///
/// Why no tail: a fork reads only its source's data below the fork point, which appends never
/// change, so nothing a fork decides depends on the source's tail. On an engine shared by
/// several nodes another node's appends move the tail between the capability's read and the
/// engine's write; a tail check there made a fork lose every race to a busy source. So the
/// engine writes only the source's state and expiry, keeping its stored tail and start
/// whatever they are by then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkSource {
    /// The source stream's path.
    pub path: String,
    /// Its new [`StreamMeta::state`] (e.g. with the fork counted).
    pub state: Vec<u8>,
    /// Its new [`StreamMeta::expires_at`].
    pub expires_at: Option<Millis>,
    /// The stored state it must still have (see [`StreamStore::commit_checked`]): set by
    /// capabilities on engines shared by several processes, where another node may have
    /// changed the source (closed, soft-deleted, deleted and created again) since it was read.
    /// A plain append leaves the state as it is, so it does not refuse the fork. `None`: the
    /// source only has to exist (the capability's lock excludes every other writer).
    pub expected_state: Option<Vec<u8>>,
    /// The highest stored [`StreamMeta::start`] the source may have: set by capabilities on
    /// shared engines when creating a fork, to the retained start the fork was decided on (its
    /// floor on the source). A trim (on another node) raises only the start, not the state, so
    /// without this a fork decided on an older start could be made with a fork point or floor
    /// below data already deleted. `None`: not checked (deleting a fork, or a capability
    /// whose lock excludes every other writer, trims included).
    pub max_start: Option<u64>,
}

impl ForkSource {
    /// Whether the source's stored state and start are the ones expected.
    pub fn matches(&self, stored_state: &[u8], stored_start: u64) -> bool {
        self.expected_state
            .as_ref()
            .is_none_or(|state| state.as_slice() == stored_state)
            && self.max_start.is_none_or(|max| stored_start <= max)
    }
}

/// Outcome of one [`StreamStore::trim_stream`] batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// The stream's retained start after this call.
    pub start: u64,
    /// Hot chunks deleted by this call.
    pub chunks: usize,
    /// Whether hot chunks wholly below `start` remain (call again to reclaim them).
    pub more: bool,
    /// Segments dropped from the index by this call (whole segments below `start`): their
    /// objects are the caller's to delete.
    pub segments: Vec<SegmentRef>,
}

/// Outcome of a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Chunks and metadata written.
    Written,
    /// The stream's stored tail is not the expected one (another writer got there first), or
    /// the stream does not exist.
    Conflict,
}

/// A commit decided on a known stored state (see [`StreamStore::commit_checked`]): what it
/// checks and what it writes, as one value the layers between the capability and the engine
/// (wrappers, trait defaults) pass on unchanged.
#[derive(Clone, Debug)]
pub struct CheckedWrite<'a> {
    /// The stream's path.
    pub path: &'a str,
    /// The stored tail the commit was decided on.
    pub expected_tail: u64,
    /// The stored [`StreamMeta::state`] the commit was decided on.
    pub expected_state: &'a [u8],
    /// Chunks to append (possibly none), from `expected_tail` on.
    pub chunks: &'a [StreamChunk],
    /// The new metadata (`meta.tail` is the end of the last chunk, or `expected_tail`).
    pub meta: &'a StreamMeta,
    /// Producer rows written in the same step.
    pub producers: ProducerUpdate,
    /// How durable the write must be before the call returns.
    pub durability: Durability,
}

/// Outcome of [`StreamStore::commit_checked_or_current`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckedCommit {
    /// Chunks and metadata written.
    Written,
    /// Nothing written; the metadata that won, when known.
    Conflict(Option<StreamMeta>),
}

/// Outcome of [`StreamStore::append_checked`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Chunks, metadata and producer rows written; the chunks start at `start` (the expected
    /// tail, or the stored tail when the engine moved the append there).
    Written {
        /// Offset of the first appended byte.
        start: u64,
    },
    /// Nothing written; the metadata that won, when known.
    Conflict(Option<StreamMeta>),
}

/// A producer row an [`StreamStore::append_checked`] requires: the row of `id` must hold
/// exactly `state` (`None`: the stream has no row for `id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerBefore {
    /// The producer's id.
    pub id: String,
    /// The state its row must hold, byte for byte.
    pub state: Option<Vec<u8>>,
}

/// The second phase of a commit: resolves with the commit's outcome once it was applied and,
/// for `Durability::Confirmed`, durable. Commits enqueued earlier are applied (and made
/// durable) no later than this one.
pub type CommitTicket = Pin<Box<dyn Future<Output = Result<Commit>> + Send + 'static>>;

/// Storage for streams.
#[async_trait]
pub trait StreamStore: Send + Sync {
    /// The stream's metadata, if it exists (expiry is the capability's decision: engines
    /// return expired streams too).
    async fn stream_meta(&self, path: &str) -> Result<Option<StreamMeta>>;

    /// Creates a stream with its initial chunks. False (nothing written) if the path exists.
    /// Provided: [`create_stream_with_producers`](Self::create_stream_with_producers) without
    /// producer rows.
    async fn create_stream(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        durability: Durability,
    ) -> Result<bool> {
        let none = ProducerUpdate::default();
        self.create_stream_with_producers(meta, chunks, none, durability)
            .await
    }

    /// Creates a stream with its first chunks and the producer rows (see [`ProducerUpdate`])
    /// that admitted them, in one atomic step. Why one step: an idempotent producer whose
    /// first append creates the stream (the security relay's per-user streams) would
    /// otherwise pay a create and an append, two engine writes, per new stream. True when
    /// this call wrote the chunks and rows; false (nothing written) if the path exists.
    async fn create_stream_with_producers(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        producers: ProducerUpdate,
        durability: Durability,
    ) -> Result<bool>;

    /// Enqueues a commit: append `chunks` (possibly none) and replace the metadata with
    /// `meta`, atomically, if the stored tail equals `expected_tail` when the commit is
    /// applied. `meta.tail` must be the end of the last chunk (or `expected_tail` when there
    /// are none). Once this returns, the commit's order is fixed: commits enqueued later
    /// (by anyone) are applied after it. The ticket reports the outcome (see [`CommitTicket`]);
    /// dropping it does not cancel the commit.
    /// `producers` is written in the same step (see [`ProducerUpdate`]).
    async fn commit_enqueue(
        &self,
        path: &str,
        expected_tail: u64,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
        durability: Durability,
    ) -> Result<CommitTicket>;

    /// [`commit_enqueue`](Self::commit_enqueue) and wait for the outcome.
    async fn commit(
        &self,
        path: &str,
        expected_tail: u64,
        chunks: &[StreamChunk],
        meta: &StreamMeta,
        durability: Durability,
    ) -> Result<Commit> {
        self.commit_enqueue(
            path,
            expected_tail,
            chunks.to_vec(),
            meta.clone(),
            ProducerUpdate::default(),
            durability,
        )
        .await?
        .await
    }

    /// [`commit`](Self::commit) that also requires the stored [`StreamMeta::state`] to equal
    /// `write.expected_state` (the state the caller decided on), for engines shared by several
    /// processes. The tail alone does not version a stream: a close, a TTL refresh or a fork
    /// count changes the metadata but not the tail, and a writer on another node that decided
    /// on the older metadata must lose (`Conflict`) instead of overwriting it (say, appending
    /// after the close, or re-opening the stream). Equal states are equal inputs, so an A-B-A
    /// change of the state is harmless. `write.producers` is written in the same step.
    async fn commit_checked(&self, write: CheckedWrite<'_>) -> Result<Commit>;

    /// [`commit_checked`](Self::commit_checked) that, when it loses, also says what won: the
    /// stream's metadata as stored when the commit was refused (`None`: no stream, or the
    /// engine cannot tell in the same step; read it with [`stream_meta`](Self::stream_meta)).
    /// A writer racing other nodes decides its retry on that without reading again. The
    /// default reads it after the refusal; engines whose read is a network round trip return
    /// it with the refusal.
    async fn commit_checked_or_current(&self, write: CheckedWrite<'_>) -> Result<CheckedCommit> {
        let path = write.path;
        Ok(match self.commit_checked(write).await? {
            Commit::Written => CheckedCommit::Written,
            Commit::Conflict => CheckedCommit::Conflict(self.stream_meta(path).await?),
        })
    }

    /// A plain append on an engine shared by several processes, decided on what the caller
    /// last knew of the stream: like
    /// [`commit_checked_or_current`](Self::commit_checked_or_current), and it also requires
    /// each producer row of `before` to hold the given state. When the stored tail is not
    /// `write.expected_tail` but everything else holds, and the append leaves the state as it
    /// is (`meta.state == expected_state`, so nothing it decided depends on the tail), an
    /// engine may **move** it to the stored tail instead of refusing it: every chunk offset and
    /// `meta.tail` shift by the difference, and the answer says where the chunks start. Why:
    /// several nodes appending to one stream otherwise lose most compares to each other
    /// (each one's cached tail is stale), and every lost compare is a round trip and a retry.
    /// The default never moves (checks the rows, then commits); engines whose writes are
    /// network round trips move, in the same atomic step as the checks.
    async fn append_checked(
        &self,
        write: CheckedWrite<'_>,
        before: &[ProducerBefore],
    ) -> Result<Appended> {
        let (path, start) = (write.path, write.expected_tail);
        for b in before {
            let row = self.stream_producer(path, &b.id).await?;
            if row.map(|r| r.state) != b.state {
                return Ok(Appended::Conflict(self.stream_meta(path).await?));
            }
        }
        Ok(match self.commit_checked_or_current(write).await? {
            CheckedCommit::Written => Appended::Written { start },
            CheckedCommit::Conflict(current) => Appended::Conflict(current),
        })
    }

    /// The producer `id` of the stream at `path`, if it has a row.
    async fn stream_producer(&self, path: &str, id: &str) -> Result<Option<ProducerRecord>>;

    /// Up to `limit` producer rows of the stream at `path` with an id greater than `after`,
    /// ordered by id (empty if the stream does not exist). The per-stream cap
    /// ([`ProducerUpdate::max_producers`]) bounds how many rows there are to page through.
    async fn list_stream_producers(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProducerRecord>>;

    /// Creates the stream `meta.path` with its initial chunks and, in the same transaction,
    /// replaces the state and expiry of `source.path` with `source.state` and
    /// `source.expires_at` (its tail and start stay as stored). False (nothing written) if
    /// `meta.path` exists, or if the source does not exist, its state is not
    /// `source.expected_state` or its start is above `source.max_start` (each when given).
    /// The source's tail is not checked.
    async fn create_fork(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        source: &ForkSource,
        durability: Durability,
    ) -> Result<bool>;

    /// Hot chunks that end after `from`, in offset order, stopping once `max_bytes` were
    /// collected (always at least one chunk when any exists). A chunk starting before `from`
    /// is returned whole; the caller slices.
    async fn read_chunks(
        &self,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StreamChunk>>;

    /// Deletes the stream `path` like [`delete_stream`](Self::delete_stream) and, in the same
    /// transaction, replaces the state and expiry of `source.path` with `source.state` and
    /// `source.expires_at` (its tail and start stay as stored). False (nothing written) if
    /// `path` does not exist, or if the source does not exist or its state is not
    /// `source.expected_state` (when given). The source's tail is not checked.
    async fn delete_fork(
        &self,
        path: &str,
        source: &ForkSource,
        durability: Durability,
    ) -> Result<bool>;

    /// Deletes the stream: metadata, chunks, producer rows and segment index. True if it existed. (Segment
    /// files in object storage are the capability's to delete, before calling this.)
    async fn delete_stream(&self, path: &str, durability: Durability) -> Result<bool>;

    /// Paths starting with `prefix`, strictly after `after`, ascending, at most `limit`.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>>;

    /// Paths of streams whose `expires_at` is at or before `now`, at most `limit`.
    async fn expired_streams(&self, now: Millis, limit: usize) -> Result<Vec<String>>;

    /// The stream's cold segments, in offset order.
    async fn segments(&self, path: &str) -> Result<Vec<SegmentRef>>;

    /// Records `segment` and deletes the hot chunks it covers (those with
    /// `segment.start <= offset` and `end <= segment.end`), atomically. The segment must end
    /// on a chunk boundary. False (nothing changed) if the stream does not exist, or if the
    /// segment does not start where the sealed range ends (the last segment's end; with no
    /// segment yet, the first hot chunk's offset): a sealer that decided on an older index
    /// (another process sealed meanwhile) loses instead of indexing an overlapping segment.
    async fn seal_segment(
        &self,
        path: &str,
        segment: &SegmentRef,
        durability: Durability,
    ) -> Result<bool>;

    /// Retention: in one transaction, raises the stream's retained start to `before` (never
    /// lowers it, never past the tail: `min(before, tail)`), deletes at most `max_chunks` hot
    /// chunks that end at or before the new start, lowest first, and drops the segments that
    /// end at or before it from the index. A chunk or segment that straddles the start is kept
    /// whole (readers below the start are refused by the capability). Bounded so a long trim
    /// is many short transactions that never stall appends; a crash between two leaves the
    /// start raised and some rows below it, which the next call reclaims. `None` (nothing
    /// written) if the stream does not exist, or if its stored [`StreamMeta::state`] is not
    /// `expected_state` (when given).
    ///
    /// Why the state check: how far a stream may be trimmed depends on its forks (they read
    /// the data below their fork points by reference), which the capability keeps in the
    /// state. On an engine shared by several processes another node may create a fork between
    /// the capability's read and this call; the fork changes the state, so the trim decided
    /// without it is refused and decided again. Appends leave the state as it is and never
    /// refuse a trim. `None` for `expected_state` where the capability's lock already excludes
    /// every other writer, and for the later batches of a trim (they delete only below the
    /// start already stored, which forks check, see [`ForkSource::max_start`]).
    async fn trim_stream(
        &self,
        path: &str,
        before: u64,
        max_chunks: usize,
        expected_state: Option<&[u8]>,
        durability: Durability,
    ) -> Result<Option<Trimmed>>;

    /// Keyed compaction: deletes the hot chunks stored at exactly `offsets`, all of them or
    /// none, in one transaction. False (nothing deleted) if the stream does not exist or any
    /// of them is no longer a hot chunk there (trimmed, sealed or dropped meanwhile): the
    /// caller decided on chunks that changed and must decide again. Other chunks, the tail,
    /// the start and the metadata are untouched, so the survivors keep their offsets and a
    /// stream may have gaps between chunks from then on (readers skip them).
    async fn drop_chunks(
        &self,
        path: &str,
        offsets: &[u64],
        durability: Durability,
    ) -> Result<bool>;
}

/// The cold tier's sealing lease on an engine shared by several processes.
///
/// Why: a seal uploads a segment object, then indexes it; two nodes compacting the same
/// streams would upload twice and all but one seal would be refused (see
/// [`StreamStore::seal_segment`]). One node at a time holds the lease and compacts. The lease
/// expires unless renewed, so a dead holder is replaced after its TTL; its fencing token
/// protects against a holder that was paused past its TTL and does not know it lost the
/// lease: seals through this handle carry the token, and the engine refuses a seal of a
/// stream that a holder with a greater token already sealed.
///
/// Exclusive engines (SQLite, memory) have one process and no lease (`Stores::seal_lease` is
/// `None`).
#[async_trait]
pub trait SealLease: Send + Sync {
    /// Takes or renews the lease for this handle for `ttl_ms`: its fencing token (the same
    /// while this handle keeps renewing in time; greater than every earlier token when taken
    /// over), or `None` while another handle's lease runs. Later seals through this handle
    /// carry the token.
    async fn acquire_seal_lease(&self, ttl_ms: u64) -> Result<Option<u64>>;
}

/// A tail notification (see [`StreamWakes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamWake<'a> {
    /// The stream at this path changed (appended, closed, deleted, ...) through another
    /// handle of the store.
    Changed(&'a str),
    /// Notifications may have been missed (the notification channel reconnected): any stream
    /// may have changed.
    Resync,
}

/// Receives tail notifications; called from the engine's task, so it must not block.
pub type WakeSink = std::sync::Arc<dyn Fn(StreamWake<'_>) + Send + Sync>;

/// Tail notifications across every process sharing one store.
///
/// Why: a capability wakes its own long-poll and SSE readers after its own commits (it knows
/// when they are durable), but on a shared engine (several nodes on one Redis) another node may
/// append. A notification is a hint, never data: a woken reader re-reads the stream from the
/// store, so a late, duplicated or spurious notification costs one read and nothing else, and
/// [`StreamWake::Resync`] after a reconnect covers the ones that were lost.
///
/// Changes made through the same handle are not reported (their caller announces them).
/// Exclusive engines have no other handles; the one other writer of their streams is the
/// engine itself, appending routed events (`crate::Outbox::outbox_route`, SQLite), and those
/// appends are reported here once durable.
pub trait StreamWakes: Send + Sync {
    /// Registers `sink` for every later notification.
    fn listen(&self, sink: WakeSink);
}
