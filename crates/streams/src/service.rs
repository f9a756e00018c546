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
use sessiond_store::{now_ms, Commit, Durability, Millis, StreamChunk, StreamStore};
use tokio::sync::watch;

use crate::cold::ColdReader;
use crate::config::StreamsConfig;
use crate::error::{StreamError, StreamResult};
use crate::state::{Ancestor, Stream, StreamInfo, StreamObject};

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

/// One page of a read: the values (JSON) or byte pieces (binary) and where the next read starts.
pub struct Page {
    pub pieces: Vec<Vec<u8>>,
    pub next: u64,
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
    pub async fn lock(&self, path: &str) -> StreamResult<Guard> {
        let mut g = self.objects.lock(path).await;
        let failed = self.heal(&mut g).await?;
        if g.state().is_none() || !self.exclusive || failed {
            let meta = self.store.stream_meta(path).await?;
            let stream = meta.as_ref().map(Stream::decode).transpose()?;
            match g.state_mut() {
                Some(object) => object.stream = stream,
                None => g.set(StreamObject::new(stream)),
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
        let result = self
            .store
            .commit(g.key(), expected_tail, chunks, &meta, durability)
            .await?;
        let Some(object) = g.state_mut() else {
            return Err(StreamError::busy("stream object vanished"));
        };
        match result {
            Commit::Written => {
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
            let mut g = self.lock(&path).await?;
            let Some(stream) = stream(&g) else {
                break;
            };
            let mut info = stream.info.clone();
            let tail = stream.tail;
            info.forks = info.forks.saturating_sub(1);
            if info.forks == 0 && (info.soft_deleted || info.expired(now_ms())) {
                next = self.hard_delete(&mut g).await?;
            } else {
                self.commit(&mut g, tail, &[], info, false).await?;
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

    /// Chunks of `path` from `from`: hot ones from the engine, sealed ones from the cold tier
    /// when the hot log starts after `from`.
    async fn read_path(&self, path: &str, from: u64, max: usize) -> StreamResult<Vec<StreamChunk>> {
        let hot = self.store.read_chunks(path, from, max).await?;
        let first_hot = hot.first().map(|c| c.offset);
        if first_hot.is_none_or(|offset| offset > from) {
            let mut cold = self.cold.read(path, from, max).await?;
            cold.retain(|c| first_hot.is_none_or(|h| c.offset < h));
            if !cold.is_empty() {
                return Ok(cold);
            }
        }
        Ok(hot)
    }

    /// The end of the stored message that contains (or starts at) `pos`, capped at its range.
    pub async fn message_end(&self, snap: &Snapshot, pos: u64) -> StreamResult<Option<u64>> {
        for (path, start, end) in ranges(snap) {
            if pos >= start && pos < end {
                let chunks = self.read_path(path, pos, 1).await?;
                return Ok(chunks.first().map(|c| c.end().min(end)));
            }
        }
        Ok(None)
    }

    /// One page of `snap` from `from`: at most `max` bytes (binary pages are cut anywhere; JSON
    /// pages only between values, and always hold at least one value), spanning the fork's
    /// ancestors and its own data.
    pub async fn read_page(&self, snap: &Snapshot, from: u64, max: usize) -> StreamResult<Page> {
        let ranges = ranges(snap);
        let mut pos = from.min(snap.tail);
        let mut budget = max.max(1);
        let mut pieces = Vec::new();
        'ranges: for (path, _start, end) in ranges {
            while pos < end {
                let chunks = self.read_path(path, pos, budget).await?;
                if chunks.is_empty() {
                    break;
                }
                let mut advanced = false;
                for c in chunks {
                    if c.offset >= end {
                        break;
                    }
                    if snap.json {
                        if c.offset < pos {
                            continue;
                        }
                        if !pieces.is_empty() && c.data.len() > budget {
                            break 'ranges;
                        }
                        budget = budget.saturating_sub(c.data.len());
                        pos = c.end();
                        pieces.push(c.data);
                    } else {
                        let from_in = (pos.max(c.offset) - c.offset) as usize;
                        let to_in = (c.end().min(end) - c.offset) as usize;
                        let take = (to_in.saturating_sub(from_in)).min(budget);
                        pieces.push(c.data[from_in..from_in + take].to_vec());
                        budget -= take;
                        pos += take as u64;
                    }
                    advanced = true;
                    if budget == 0 {
                        break 'ranges;
                    }
                }
                if !advanced {
                    break;
                }
            }
        }
        Ok(Page { pieces, next: pos })
    }
}

/// The stretches of a snapshot: each ancestor's `[start, end)` (clamped at the fork point),
/// then the stream's own data.
fn ranges(snap: &Snapshot) -> Vec<(&str, u64, u64)> {
    let mut out: Vec<(&str, u64, u64)> = Vec::with_capacity(snap.lineage.len() + 1);
    for (i, a) in snap.lineage.iter().enumerate() {
        let end = snap
            .lineage
            .get(i + 1)
            .map_or(snap.start, |n| n.start)
            .min(snap.start);
        out.push((&a.path, a.start, end));
    }
    out.push((&snap.path, snap.start, snap.tail));
    out
}

/// The live stream in a guard, if any.
pub fn stream(g: &Guard) -> Option<&Stream> {
    g.state().and_then(|o| o.stream.as_ref())
}
