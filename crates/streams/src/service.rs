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
use sessiond_store::{now_ms, Commit, Durability, Millis, StreamChunk, StreamStore, StreamWakes};
use tokio::sync::watch;

use crate::cold::ColdReader;
use crate::config::StreamsConfig;
use crate::error::{StreamError, StreamResult};
use crate::state::{Ancestor, Stream, StreamInfo, StreamObject};
use crate::wakes::WakeHub;

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
    pub(crate) wakes: Arc<WakeHub>,
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
            wakes: Arc::default(),
        }
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
    pub async fn lock(&self, path: &str) -> StreamResult<Guard> {
        let mut g = self.objects.lock(path).await;
        let failed = self.heal(&mut g).await?;
        if g.state().is_none() || !self.exclusive || failed {
            let changed = match g.state() {
                Some(object) => object.changed.clone(),
                None => self.wakes.sender(path),
            };
            // Read before the load: a change after it moves the value (see `loaded_at`).
            let seen = (!self.exclusive).then(|| *changed.borrow());
            let meta = self.store.stream_meta(path).await?;
            let stream = meta.as_ref().map(Stream::decode).transpose()?;
            match g.state_mut() {
                Some(object) => object.stream = stream,
                None => g.set(StreamObject::new(stream, changed)),
            }
            if let Some(object) = g.state_mut() {
                object.loaded_at = seen;
            }
        }
        Ok(g)
    }

    /// Classifies the locked stream at `now`, applying lazy expiry: an expired stream without
    /// forks is deleted (404); one with forks becomes soft-deleted (410).
    pub async fn find(&self, g: &mut Guard, now: Millis) -> StreamResult<Found> {
        let Some(stream) = stream(g) else {
            return Ok(Found::Missing);
        };
        if stream.info.soft_deleted {
            return Ok(Found::Gone);
        }
        if !stream.info.expired(now) {
            return Ok(Found::Live);
        }
        if stream.info.forks > 0 {
            let mut info = stream.info.clone();
            info.soft_deleted = true;
            let tail = stream.tail;
            self.commit(g, tail, &[], info, true).await?;
            return Ok(Found::Gone);
        }
        let parent = self.hard_delete(g).await?;
        if let Some(parent) = parent {
            self.release_source(&parent).await?;
        }
        Ok(Found::Missing)
    }

    /// For a writer: [`lock_live`](Self::lock_live), except that on a shared engine a cached
    /// stream that is live at `now` is kept without a round trip. Returns whether the metadata
    /// is fresh (just read, or the engine is exclusive). A writer on cached metadata must let
    /// its commit check that state (`commit_with` does, via `commit_checked`) and must decide
    /// again on fresh metadata before answering anything that wrote nothing.
    pub async fn lock_live_cached(&self, path: &str, now: Millis) -> StreamResult<(Guard, bool)> {
        if !self.exclusive {
            let g = self.objects.lock(path).await;
            let live = stream(&g).is_some_and(|s| !s.info.soft_deleted && !s.info.expired(now));
            if live && !g.state().is_some_and(|o| o.flight.borrow().failed) {
                return Ok((g, false));
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

    /// [`commit`](Self::commit) with an explicit durability.
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
        let tail = chunks.last().map_or(expected_tail, StreamChunk::end);
        let meta = Stream::encode(g.key(), tail, &info)?;
        // On a shared engine the tail does not version the stream (another node may have
        // closed it, or counted a fork, at the same tail): require the state we decided on.
        let decided_on = stream(g)
            .filter(|_| !self.exclusive)
            .map(|s| s.stored_state.clone());
        let result = match decided_on {
            Some(state) => {
                self.store
                    .commit_checked(g.key(), expected_tail, &state, chunks, &meta, durability)
                    .await?
            }
            None => {
                self.store
                    .commit(g.key(), expected_tail, chunks, &meta, durability)
                    .await?
            }
        };
        let Some(object) = g.state_mut() else {
            return Err(StreamError::busy("stream object vanished"));
        };
        match result {
            Commit::Written => {
                object.stream = Some(Stream {
                    tail,
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

    /// Deletes the locked stream's data everywhere and returns its direct source, if it was a
    /// fork (the caller releases that reference after dropping this lock).
    pub async fn hard_delete(&self, g: &mut Guard) -> StreamResult<Option<String>> {
        let parent = stream(g).and_then(|s| s.info.lineage.last().map(|a| a.path.clone()));
        self.settle(g).await?;
        let path = g.key().to_owned();
        self.cold.delete_all(&path).await?;
        self.store
            .delete_stream(&path, Durability::Confirmed)
            .await?;
        if let Some(object) = g.state_mut() {
            object.stream = None;
            object.notify();
        }
        Ok(parent)
    }

    /// Drops one fork reference from `path`, deleting it (and cascading up) when it was
    /// soft-deleted or expired and this was the last fork.
    pub async fn release_source(&self, path: &str) -> StreamResult<()> {
        let mut next = Some(path.to_owned());
        while let Some(path) = next.take() {
            next = self.retry_stale(|| self.release_one(&path)).await?;
        }
        Ok(())
    }

    /// One step of [`release_source`](Self::release_source): the next ancestor to release.
    async fn release_one(&self, path: &str) -> StreamResult<Option<String>> {
        let mut g = self.lock(path).await?;
        let Some(stream) = stream(&g) else {
            return Ok(None);
        };
        let mut info = stream.info.clone();
        let tail = stream.tail;
        info.forks = info.forks.saturating_sub(1);
        if info.forks == 0 && (info.soft_deleted || info.expired(now_ms())) {
            return self.hard_delete(&mut g).await;
        }
        self.commit(&mut g, tail, &[], info, false).await?;
        Ok(None)
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
                }
                other => return other,
            }
        }
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
                lineage: s.info.lineage.clone(),
            },
            changes,
        ))
    }
}

/// The live stream in a guard, if any.
pub fn stream(g: &Guard) -> Option<&Stream> {
    g.state().and_then(|o| o.stream.as_ref())
}
