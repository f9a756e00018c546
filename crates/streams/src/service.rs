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

use axum::http::StatusCode;
use sessiond_runtime::{ObjectGuard, ObjectKind};
use sessiond_store::{
    now_ms, Commit, Durability, ForkSource, Millis, ProducerRecord, ProducerUpdate, StreamChunk,
    StreamStore,
};
use tokio::sync::watch;

use crate::cold::ColdReader;
use crate::config::StreamsConfig;
use crate::error::{StreamError, StreamResult};
use crate::state::{Ancestor, ProducerState, Stream, StreamInfo, StreamObject};

/// Producer states an object keeps cached once nothing is in flight (beyond it the cache is
/// dropped and producers are read from the store again).
const PRODUCER_CACHE: usize = 64;

/// A locked stream object.
pub type Guard = ObjectGuard<StreamObject>;

/// The capability's shared state (cheap to clone).
#[derive(Clone)]
pub struct Streams {
    pub(crate) store: Arc<dyn StreamStore>,
    pub(crate) cold: Arc<dyn ColdReader>,
    pub(crate) objects: ObjectKind<StreamObject>,
    pub(crate) config: Arc<StreamsConfig>,
    /// True when no other process writes this engine: cached metadata stays valid.
    pub(crate) exclusive: bool,
    pub(crate) sse_open: Arc<AtomicUsize>,
    pub(crate) long_polls: Arc<AtomicUsize>,
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
    pub lineage: Vec<Ancestor>,
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
        Streams {
            store,
            cold,
            objects,
            config: Arc::new(config),
            exclusive,
            sse_open: Arc::new(AtomicUsize::new(0)),
            long_polls: Arc::new(AtomicUsize::new(0)),
        }
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
        if g.state().is_none() || !self.exclusive || failed {
            let meta = self.store.stream_meta(path).await?;
            let stream = meta.as_ref().map(Stream::decode).transpose()?;
            match g.state_mut() {
                Some(object) => {
                    object.stream = stream;
                    object.producers.clear();
                }
                None if stream.is_some() => g.set(StreamObject::new(stream)),
                None => {}
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
        let result = self
            .store
            .commit_enqueue(
                g.key(),
                expected_tail,
                chunks.to_vec(),
                meta.clone(),
                producers,
                durability,
            )
            .await?
            .await?;
        let Some(object) = g.state_mut() else {
            return Err(StreamError::busy("stream object vanished"));
        };
        match result {
            Commit::Written => {
                object.producers.extend(written);
                object.stream = Some(Stream {
                    tail,
                    info,
                    persisted_expiry: meta.expires_at,
                });
                if wake {
                    object.notify();
                }
                Ok(())
            }
            Commit::Conflict => {
                // Another node changed the stream: forget the cache so the retry re-reads.
                object.stream = None;
                Err(StreamError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the stream changed concurrently; retry",
                ))
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
        if lag >= (ttl as i64 * 100).max(1000) {
            let (tail, info) = (stream.tail, stream.info.clone());
            self.commit_with(g, tail, &[], info, false, Durability::Unconfirmed)
                .await?;
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

    /// Deletes the locked stream's data everywhere. A fork's reference on its direct source is
    /// released in the same engine transaction (`StreamStore::delete_fork`; the source is
    /// locked meanwhile: child then parent, as in fork creation). Returns that source when it
    /// should go too (soft-deleted or expired, and this was its last fork): the caller passes
    /// it to [`remove_released`](Self::remove_released) after dropping this lock.
    pub async fn hard_delete(&self, g: &mut Guard) -> StreamResult<Option<String>> {
        let parent = stream(g).and_then(|s| s.info.lineage.last().map(|a| a.path.clone()));
        self.settle(g).await?;
        let path = g.key().to_owned();
        self.cold.delete_all(&path).await?;
        let mut cascade = None;
        let released = match parent {
            Some(parent) => {
                let mut pg = self.lock(&parent).await?;
                self.settle(&mut pg).await?;
                match stream(&pg).cloned() {
                    Some(src) => {
                        let mut info = src.info;
                        info.forks = info.forks.saturating_sub(1);
                        let link = ForkSource {
                            path: parent.clone(),
                            expected_tail: src.tail,
                            meta: Stream::encode(&parent, src.tail, &info)?,
                        };
                        let deleted = self
                            .store
                            .delete_fork(&path, &link, Durability::Confirmed)
                            .await?;
                        if !deleted {
                            return Err(StreamError::busy(
                                "the stream or its fork source changed concurrently; retry",
                            ));
                        }
                        if info.forks == 0 && (info.soft_deleted || info.expired(now_ms())) {
                            cascade = Some(parent);
                        }
                        if let Some(object) = pg.state_mut() {
                            object.stream = Some(Stream {
                                tail: src.tail,
                                info,
                                persisted_expiry: link.meta.expires_at,
                            });
                        }
                        true
                    }
                    None => false,
                }
            }
            None => false,
        };
        if !released {
            self.store
                .delete_stream(&path, Durability::Confirmed)
                .await?;
        }
        if let Some(object) = g.state_mut() {
            object.stream = None;
            object.producers.clear();
            object.notify();
            if object.is_vacant() {
                g.take();
            }
        }
        Ok(cascade)
    }

    /// Removes `path` if no fork reads it any more and it is soft-deleted or expired, then its
    /// own source if that became such an orphan, up the chain. Each step is atomic; a crash
    /// between two leaves a soft-deleted orphan, which `find` (and so the sweeper, which finds
    /// it in the expiry index) removes later.
    pub async fn remove_released(&self, path: &str) -> StreamResult<()> {
        crate::failpoint::hit("fork-released").await;
        let mut next = Some(path.to_owned());
        while let Some(path) = next.take() {
            let mut g = self.lock(&path).await?;
            let Some(s) = stream(&g) else {
                break;
            };
            if s.info.forks == 0 && (s.info.soft_deleted || s.info.expired(now_ms())) {
                next = self.hard_delete(&mut g).await?;
            }
        }
        Ok(())
    }

    /// The locked stream's snapshot and a receiver for its changes.
    pub fn snapshot(g: &Guard) -> Option<(Snapshot, watch::Receiver<u64>)> {
        let object = g.state()?;
        let s = object.stream.as_ref()?;
        Some((
            Snapshot {
                path: g.key().to_owned(),
                tail: object.visible_tail()?,
                closed: s.info.closed,
                json: s.info.is_json(),
                content_type: s.info.content_type.clone(),
                created_at: s.info.created_at,
                start: s.info.start,
                lineage: s.info.lineage.clone(),
            },
            object.changed.subscribe(),
        ))
    }
}

/// The live stream in a guard, if any.
pub fn stream(g: &Guard) -> Option<&Stream> {
    g.state().and_then(|o| o.stream.as_ref())
}
