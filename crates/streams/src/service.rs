//! The streams service: per-stream serialization, loading, lazy expiry, atomic commits, and
//! the fork-aware range reader every read mode shares.
//!
//! Every request that looks at or changes a stream takes the stream's object lock
//! ([`ObjectKind::lock`]) only for its metadata step: writers hold it across the
//! `StreamStore::commit` (so appends to one stream are serialized and the in-memory metadata
//! always equals the stored one), readers hold it just long enough to take a [`Snapshot`] and
//! then read chunks without it. Chunks below a snapshot's tail never change, so an unlocked
//! read of `[from, snapshot.tail)` is consistent.
//!
//! Waiters are woken by [`StreamObject::notify`] only after `commit` returned, i.e. after the
//! write is durable: a long-poll or SSE reader never sees data that a crash could take back.
//! Plain appends are the exception to "held across the commit": they are pipelined (see
//! `pipeline.rs`), and snapshots then carry the durable tail, not the assigned one.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use sessiond_runtime::{ObjectGuard, ObjectKind};
use sessiond_store::{
    now_ms, CheckedCommit, CheckedWrite, Commit, Durability, Millis, ProducerRecord,
    ProducerUpdate, StreamChunk, StreamStore, StreamWakes,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cold::ColdReader;
use crate::config::StreamsConfig;
use crate::error::{StreamError, StreamResult};
use crate::state::{Ancestor, ProducerState, Stream, StreamInfo, StreamObject};
use crate::wakes::WakeHub;

/// Producer states an object keeps cached once nothing is in flight (beyond it the cache is
/// dropped and producers are read from the store again).
const PRODUCER_CACHE: usize = 64;

/// A locked stream object.
pub type Guard = ObjectGuard<StreamObject>;

/// The capability's shared state: one `Arc`, so the clone every request takes (axum's `State`)
/// is one atomic increment, not one per field plus the drain token's lock (2.7 k instructions
/// per append for the clone and its drop, measured with `bench/profile/callgrind`).
#[derive(Clone)]
pub struct Streams {
    shared: Arc<StreamsShared>,
}

impl std::ops::Deref for Streams {
    type Target = StreamsShared;

    fn deref(&self) -> &StreamsShared {
        &self.shared
    }
}

/// What [`Streams`] shares (its fields are the crate's).
#[derive(Clone)]
pub struct StreamsShared {
    pub(crate) store: Arc<dyn StreamStore>,
    pub(crate) cold: Arc<dyn ColdReader>,
    pub(crate) objects: ObjectKind<StreamObject>,
    pub(crate) config: Arc<StreamsConfig>,
    /// True when no other process writes this engine: cached metadata stays valid.
    pub(crate) exclusive: bool,
    pub(crate) sse_open: Arc<AtomicUsize>,
    pub(crate) long_polls: Arc<AtomicUsize>,
    pub(crate) wakes: Arc<WakeHub>,
    /// Set when the server starts draining: live reads end at once with their offset.
    pub(crate) draining: crate::draining::Draining,
    /// Set when read tokens are bound to account sessions (see [`crate::bound`]); set once,
    /// after the sessions capability exists, and seen by every clone.
    pub(crate) sessions: Arc<std::sync::OnceLock<Arc<dyn crate::bound::SessionBinding>>>,
    /// Paths under this prefix are also appended to by the engine itself (see
    /// [`Streams::written_outside`]); set once, seen by every clone.
    pub(crate) outside: Arc<std::sync::OnceLock<String>>,
}

/// What a lookup found.
pub enum Found {
    /// No stream (or it just expired and was removed).
    Missing,
    /// Soft-deleted, or expired while forks still read it: 410.
    Gone,
    /// A live stream (in the guard).
    Live,
}

/// An immutable view of a stream taken under its lock, enough to read without it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub path: String,
    pub tail: u64,
    pub closed: bool,
    pub json: bool,
    pub content_type: String,
    pub created_at: Millis,
    pub start: u64,
    /// The retained start: reads below it are 410 `offset_gone`.
    pub retained: u64,
    pub lineage: Vec<Ancestor>,
    /// Keyed compaction dropped a delete below this offset: reads above `retained` and below
    /// it are 410 `offset_gone` (0 without compaction).
    pub purged: u64,
    /// The compaction generation (part of ETags).
    pub generation: u64,
    /// Whether the stream is compacted (its reads may meet gaps that are not trims).
    pub compacted: bool,
    /// What appends published since (see `recent.rs`), valid while its epoch is `epoch`.
    pub recent: Arc<crate::recent::Recent>,
    pub epoch: u64,
}

impl Snapshot {
    /// After a wake: takes the tail a plain append published, if nothing else changed since
    /// the snapshot. False when the reader must refresh under the lock.
    pub fn advance(&mut self) -> bool {
        match self.recent.published(self.created_at, self.epoch) {
            Some(p) if p.tail > self.tail => {
                self.tail = p.tail;
                true
            }
            _ => false,
        }
    }
}

impl Streams {
    /// Builds the service. `objects` is the runtime kind for stream objects (in-memory; the
    /// service loads and saves through `store`); `exclusive` says whether this process is the
    /// only writer of the engine (`EngineAdmin::exclusive`).
    pub fn new(
        store: Arc<dyn StreamStore>,
        cold: Arc<dyn ColdReader>,
        objects: ObjectKind<StreamObject>,
        config: StreamsConfig,
        exclusive: bool,
    ) -> Streams {
        let shared = StreamsShared {
            store,
            cold,
            objects,
            config: Arc::new(config),
            exclusive,
            sse_open: Arc::new(AtomicUsize::new(0)),
            long_polls: Arc::new(AtomicUsize::new(0)),
            wakes: Arc::default(),
            draining: crate::draining::Draining::default(),
            sessions: Arc::default(),
            outside: Arc::default(),
        };
        Streams {
            shared: Arc::new(shared),
        }
    }

    /// Binds read tokens to account sessions through `binding` (only when
    /// `streams.read_tokens_bound_to_sessions` is on; a second call is ignored).
    pub fn bind_sessions(&self, binding: Arc<dyn crate::bound::SessionBinding>) {
        if self.config.read_tokens_bound_to_sessions {
            let _ = self.sessions.set(binding);
        }
    }

    /// Ends live reads when `token` is cancelled (server shutdown): long-polls answer at once
    /// as on their timeout, SSE responses send a last control event and close, so clients
    /// resume from that offset on another node or after the restart. SSE readers do not wait
    /// on the token (each delivery would register and drop a waiter): the cancellation wakes
    /// every reader through its stream's change channel, and a woken reader checks the drain
    /// flag (set before the wake-up, `draining.rs`).
    /// Call inside the runtime.
    pub fn with_shutdown(mut self, token: CancellationToken) -> Streams {
        let draining = crate::draining::Draining::new(token);
        Arc::make_mut(&mut self.shared).draining = draining.clone();
        let hub = self.wakes.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                draining.mark().await;
                hub.wake_all();
            })),
            Err(_) => tracing::error!(
                "streams: no runtime; SSE readers end at their keep-alive on shutdown"
            ),
        }
        self
    }

    /// Wakes this node's readers on `source`'s notifications (changes made by other nodes).
    pub fn listen(&self, source: &dyn StreamWakes) {
        self.wakes.listen_to(source);
    }

    /// The configuration.
    pub fn config(&self) -> &StreamsConfig {
        &self.config
    }

    /// Locks `path` and makes sure its object reflects the store.
    ///
    /// An absent stream that nobody waits on gets no object (the runtime then drops the empty
    /// slot with the guard), so lookups of missing names leave nothing resident; the price is
    /// one engine read per lookup of a missing stream.
    pub async fn lock(&self, path: &str) -> StreamResult<Guard> {
        let mut g = self.objects.lock(path).await;
        let failed = self.heal(&mut g).await?;
        let trusted = self.trusts_cache(path);
        if g.state().is_none() || !trusted || failed {
            let changed = match g.state() {
                Some(object) => object.changed.clone(),
                None => self.wakes.sender(path),
            };
            // Read before the load: a change after it moves the value (see `loaded_at`).
            let seen = (!trusted).then(|| *changed.borrow());
            let meta = self.store.stream_meta(path).await?;
            let stream = meta.as_ref().map(Stream::decode).transpose()?;
            match g.state_mut() {
                Some(object) => {
                    object.stream = stream;
                    object.producers.clear();
                }
                None if stream.is_some() => g.set(StreamObject::new(stream, changed)),
                None => {}
            }
            if let Some(object) = g.state_mut() {
                object.loaded_at = seen;
            }
        }
        if let Some(object) = g.state_mut() {
            if object.is_vacant() {
                g.take();
            } else if object.producers.len() > PRODUCER_CACHE
                && object.flight.borrow().in_flight == 0
            {
                // Every commit landed: the store is authoritative again.
                object.producers.clear();
            }
        }
        Ok(g)
    }

    /// The state of producer `id` of the locked stream: the one assigned by an append in
    /// flight, a pending legacy one, or the stored row.
    pub async fn producer(&self, g: &mut Guard, id: &str) -> StreamResult<Option<ProducerState>> {
        if let Some(object) = g.state() {
            if let Some(state) = object.producers.get(id) {
                return Ok(Some(state.clone()));
            }
            if let Some(state) = object
                .stream
                .as_ref()
                .and_then(|s| s.info.producers.get(id))
            {
                return Ok(Some(state.clone()));
            }
        }
        let Some(record) = self.store.stream_producer(g.key(), id).await? else {
            return Ok(None);
        };
        let state = ProducerState::decode(g.key(), &record.state)?;
        if let Some(object) = g.state_mut() {
            object.producers.insert(id.to_owned(), state.clone());
        }
        Ok(Some(state))
    }

    /// Moves the producer states pending in `info` into the rows a commit writes.
    pub(crate) fn producer_update(
        &self,
        info: &mut StreamInfo,
    ) -> (ProducerUpdate, Vec<(String, ProducerState)>) {
        let pending: Vec<(String, ProducerState)> =
            std::mem::take(&mut info.producers).into_iter().collect();
        let used_at = now_ms();
        let update = ProducerUpdate {
            upsert: pending
                .iter()
                .map(|(id, state)| ProducerRecord {
                    id: id.clone(),
                    state: state.encode(),
                    used_at,
                })
                .collect(),
            max_producers: self.config.max_producers_per_stream,
        };
        (update, pending)
    }

    /// Classifies the locked stream at `now`, applying lazy expiry: an expired stream without
    /// forks is deleted (404); one with forks becomes soft-deleted (410).
    pub async fn find(&self, g: &mut Guard, now: Millis) -> StreamResult<Found> {
        let Some(stream) = stream(g) else {
            return Ok(Found::Missing);
        };
        // Soft-deleted with no fork left: a removal a crash interrupted; finish it.
        let orphan = stream.info.soft_deleted && stream.info.forks == 0;
        if stream.info.soft_deleted && !orphan {
            return Ok(Found::Gone);
        }
        if !orphan && !stream.info.expired(now) {
            return Ok(Found::Live);
        }
        if stream.info.forks > 0 {
            let mut info = stream.info.clone();
            info.soft_deleted = true;
            let tail = stream.tail;
            self.commit(g, tail, &[], info, true).await?;
            return Ok(Found::Gone);
        }
        if let Some(parent) = self.hard_delete(g).await? {
            self.remove_released(&parent).await?;
        }
        Ok(Found::Missing)
    }

    /// For a writer: [`lock_live`](Self::lock_live), except that on a shared engine a cached
    /// stream that is live at `now` is kept without a round trip. Returns whether the metadata
    /// is fresh (just read, or the engine is exclusive). A writer on cached metadata must let
    /// its commit check that state (`commit_with` does, via `commit_checked`) and must decide
    /// again on fresh metadata before answering anything that wrote nothing.
    /// Metadata a lost commit of this node brought back after `started` counts as fresh.
    pub async fn lock_live_cached(
        &self,
        path: &str,
        now: Millis,
        started: std::time::Instant,
    ) -> StreamResult<(Guard, bool)> {
        if !self.exclusive {
            let g = self.objects.lock(path).await;
            let live = stream(&g).is_some_and(|s| !s.info.soft_deleted && !s.info.expired(now));
            if let Some(object) = g.state().filter(|o| live && !o.flight.borrow().failed) {
                let fresh = object.refreshed_at.is_some_and(|at| at >= started);
                return Ok((g, fresh));
            }
        }
        Ok((self.lock_live(path, now).await?, true))
    }

    /// Locks and requires a live stream (404 / 410 otherwise).
    pub async fn lock_live(&self, path: &str, now: Millis) -> StreamResult<Guard> {
        let mut g = self.lock(path).await?;
        match self.find(&mut g, now).await? {
            Found::Live => Ok(g),
            Found::Missing => Err(StreamError::not_found()),
            Found::Gone => Err(StreamError::gone()),
        }
    }

    /// Writes `chunks` and `info` atomically after `expected_tail`; on success updates the
    /// cached object and (if `wake`) wakes readers. The caller holds the lock.
    pub async fn commit(
        &self,
        g: &mut Guard,
        expected_tail: u64,
        chunks: &[StreamChunk],
        info: StreamInfo,
        wake: bool,
    ) -> StreamResult<()> {
        self.commit_with(g, expected_tail, chunks, info, wake, Durability::Confirmed)
            .await
    }

    /// [`commit`](Self::commit) with an explicit durability. Readers must only see durable
    /// changes, so a commit that carries data or wakes readers (a close) is always written
    /// confirmed; `Unconfirmed` applies to bookkeeping only (TTL refreshes). An unconfirmed
    /// plain append gets its early answer through `pipeline.rs` instead.
    pub async fn commit_with(
        &self,
        g: &mut Guard,
        expected_tail: u64,
        chunks: &[StreamChunk],
        info: StreamInfo,
        wake: bool,
        durability: Durability,
    ) -> StreamResult<()> {
        // Ordered after every pipelined append (and `expected_tail` is then durable).
        self.settle(g).await?;
        let mut info = info;
        let (producers, written) = self.producer_update(&mut info);
        let durability = if chunks.is_empty() && !wake {
            durability
        } else {
            Durability::Confirmed
        };
        let tail = chunks.last().map_or(expected_tail, StreamChunk::end);
        let meta = Stream::encode(g.key(), tail, &info)?;
        // On a shared engine the tail does not version the stream (another node may have
        // closed it, or counted a fork, at the same tail): require the state we decided on.
        let decided_on = stream(g)
            .filter(|_| !self.exclusive)
            .map(|s| s.stored_state.clone());
        let result = match decided_on {
            Some(state) => {
                let seen = g.state().map(|o| *o.changed.borrow());
                let outcome = self
                    .store
                    .commit_checked_or_current(CheckedWrite {
                        path: g.key(),
                        expected_tail,
                        expected_state: &state,
                        chunks,
                        meta: &meta,
                        producers,
                        durability,
                    })
                    .await?;
                match outcome {
                    CheckedCommit::Written => Commit::Written,
                    CheckedCommit::Conflict(current) => {
                        return Err(refresh_after_conflict(g, current, seen));
                    }
                }
            }
            None => {
                self.store
                    .commit_enqueue(
                        g.key(),
                        expected_tail,
                        chunks.to_vec(),
                        meta.clone(),
                        producers,
                        durability,
                    )
                    .await?
                    .await?
            }
        };
        let Some(object) = g.state_mut() else {
            return Err(StreamError::busy("stream object vanished"));
        };
        match result {
            Commit::Written => {
                object.producers.extend(written);
                let retained = object.stream.as_ref().map_or(0, |s| s.retained);
                object.stream = Some(Stream {
                    tail,
                    retained,
                    info,
                    persisted_expiry: meta.expires_at,
                    stored_state: meta.state.into(),
                });
                if wake {
                    object.notify();
                }
                Ok(())
            }
            Commit::Conflict => {
                // Another node changed the stream: forget the cache so the retry re-reads.
                object.stream = None;
                Err(StreamError::stale())
            }
        }
    }

    /// Refreshes the sliding TTL at `now`. The exact deadline lives in memory; the stored one
    /// is rewritten (unconfirmed, no wake-up) only when it lags by at least a tenth of the TTL
    /// (and ≥ 1 s), so reads do not turn into a disk write each.
    pub async fn touch(&self, g: &mut Guard, now: Millis) -> StreamResult<()> {
        let Some(stream) = g.state_mut().and_then(|o| o.stream.as_mut()) else {
            return Ok(());
        };
        let Some(ttl) = stream.info.ttl_s else {
            return Ok(());
        };
        stream.info.last_access = now;
        let due = stream.info.expiry().unwrap_or(now);
        let lag = due - stream.persisted_expiry.unwrap_or(0);
        // On a shared engine the next request (maybe on another node) reloads the stored
        // deadline, so it may lag by a tenth of the TTL at most, without the 1 s floor.
        let floor = if self.exclusive { 1000 } else { 1 };
        if lag >= (ttl as i64 * 100).max(floor) {
            let (tail, info) = (stream.tail, stream.info.clone());
            match self
                .commit_with(g, tail, &[], info, false, Durability::Unconfirmed)
                .await
            {
                // Another node wrote the stream meanwhile, refreshing it itself.
                Err(e) if e.is_stale() => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Writes the exact sliding deadline when the stored one lags (the sweeper calls this for
    /// candidates that turn out alive, so they leave the expired index).
    pub async fn persist_expiry(&self, g: &mut Guard) -> StreamResult<()> {
        let Some(s) = stream(g) else {
            return Ok(());
        };
        if s.persisted_expiry == s.info.expiry() || s.info.soft_deleted {
            return Ok(());
        }
        let (tail, info) = (s.tail, s.info.clone());
        self.commit_with(g, tail, &[], info, false, Durability::Unconfirmed)
            .await
    }

    /// Runs `op` again while it fails because its commit lost a race with another node (up to
    /// `max_commit_attempts` times). `op` must lock (so each attempt decides on fresh
    /// metadata) and must have written nothing when it fails with `stale`.
    pub async fn retry_stale<T, F, Fut>(&self, mut op: F) -> StreamResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = StreamResult<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_stale() && attempt < self.config.max_commit_attempts => {
                    crate::metrics::commit_retry();
                    attempt += 1;
                    self.commit_backoff(attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Waits before attempt `attempt` (2 or more) of a commit that lost races with other
    /// nodes: a random time up to `commit_retry_backoff_ms` × 2^(attempt − 2), capped at 64×.
    pub async fn commit_backoff(&self, attempt: u32) {
        let base = self.config.commit_retry_backoff_ms;
        if base == 0 {
            return;
        }
        let cap = base.saturating_mul(1 << attempt.saturating_sub(2).min(6));
        let mut r = [0u8; 8];
        if getrandom::fill(&mut r).is_err() {
            // No randomness: the full window still spreads attempts out in time.
            r = [u8::MAX; 8];
        }
        let wait = u64::from_le_bytes(r) % (cap + 1);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    }

    /// The locked stream's snapshot and a receiver for its changes.
    pub fn snapshot(g: &Guard) -> Option<(Snapshot, watch::Receiver<u64>)> {
        let object = g.state()?;
        let s = object.stream.as_ref()?;
        let mut changes = object.changed.subscribe();
        if object
            .loaded_at
            .is_some_and(|seen| seen != *changes.borrow())
        {
            changes.mark_changed();
        }
        Some((
            Snapshot {
                path: g.key().to_owned(),
                tail: object.visible_tail()?,
                closed: s.info.closed,
                json: s.info.is_json(),
                content_type: s.info.content_type.clone(),
                created_at: s.info.created_at,
                start: s.info.start,
                retained: s.retained,
                lineage: s.info.lineage.clone(),
                purged: s.info.compaction.as_ref().map_or(0, |c| c.purged),
                generation: s.info.compaction.as_ref().map_or(0, |c| c.generation),
                compacted: s.info.compaction.is_some(),
                recent: object.recent.clone(),
                epoch: object.recent.epoch(),
            },
            changes,
        ))
    }
}

/// After a lost commit on a shared engine: caches the metadata that won (when the engine
/// returned it; else forgets the stream so the next lock reads it) and returns the `stale`
/// error that makes the writer decide again.
pub(crate) fn refresh_after_conflict(
    g: &mut Guard,
    current: Option<sessiond_store::StreamMeta>,
    seen: Option<u64>,
) -> StreamError {
    let stream = current.and_then(|meta| Stream::decode(&meta).ok());
    if let Some(object) = g.state_mut() {
        object.refreshed_at = stream.is_some().then(std::time::Instant::now);
        object.loaded_at = seen;
        object.producers.clear();
        object.stream = stream;
    }
    StreamError::stale()
}

/// The live stream in a guard, if any.
pub fn stream(g: &Guard) -> Option<&Stream> {
    g.state().and_then(|o| o.stream.as_ref())
}
