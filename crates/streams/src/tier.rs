//! The cold tier plugged into the capability: the [`ColdReader`] over `sessiond-segments`,
//! and the compaction passes (its settings, `[streams.cold]`, are [`crate::config::ColdConfig`]).
//!
//! Why compaction runs here and not in the segments crate's own loop: a seal must never land
//! on a different incarnation of a stream than the one it read. `ColdTier::compact_stream`
//! reads the stream's metadata, segments and hot chunks, writes the object, then seals; if a
//! DELETE and a re-create of the same path happened in between, the seal would drop the new
//! stream's chunks and index the old stream's bytes. So every `compact_stream` call here runs
//! while holding the stream's object lock ([`ObjectKind::lock`](sessiond_runtime::ObjectKind)),
//! the same lock appends, closes and deletes take: compaction of a stream is serialized with
//! its writes. The lock is taken per segment (not per stream), so a backlog being drained
//! lets appends in between segments. The cost: an append to a stream waits while one of its
//! segments is uploaded.
//!
//! On an engine shared by several nodes the per-node lock does not serialize nodes: there a
//! node compacts only while it holds the engine's sealing lease ([`SealLease`], TTL
//! `lease_ms`), so one node at a time seals, and a seal decided on a stale index, or sent by
//! a holder that lost the lease, is refused by the engine (its object is then deleted).
//!
//! Readers take no lock: a seal is one engine transaction (index row + deletion of the hot
//! chunks it covers), and the read path asks the hot log first and the cold tier only for what
//! lies below the first hot chunk, so a reader racing a seal sees the bytes in one place or
//! the other, never neither.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sessiond_segments::{ColdTier, CompactionPolicy};
use sessiond_store::{SealLease, StoreError, StreamStore};

use crate::cold::{ColdReader, SharedChunk};
use crate::service::Streams;

/// [`ColdReader`] over a [`ColdTier`] (the engine holds the segment index).
pub struct SegmentsCold {
    tier: Arc<ColdTier>,
    store: Arc<dyn StreamStore>,
}

impl SegmentsCold {
    /// Reads `tier` with the index in `store`.
    pub fn new(tier: Arc<ColdTier>, store: Arc<dyn StreamStore>) -> SegmentsCold {
        SegmentsCold { tier, store }
    }
}

#[async_trait]
impl ColdReader for SegmentsCold {
    async fn read(
        &self,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<SharedChunk>, StoreError> {
        let frames = self
            .tier
            .read_frames(self.store.as_ref(), path, from, max_bytes)
            .await?;
        Ok(frames
            .into_iter()
            .map(|f| SharedChunk {
                offset: f.offset,
                data: f.data,
            })
            .collect())
    }

    fn sealed_end_hint(&self, path: &str) -> u64 {
        self.tier.sealed_end_hint(path)
    }

    async fn delete_all(&self, path: &str) -> Result<(), StoreError> {
        self.tier.delete_all(self.store.as_ref(), path).await
    }

    async fn delete_segments(
        &self,
        _path: &str,
        segments: &[sessiond_store::SegmentRef],
    ) -> Result<(), StoreError> {
        for segment in segments {
            self.tier.delete_segment(segment).await?;
        }
        Ok(())
    }
}

/// Compacts `path` until nothing more is due, one segment per lock hold; returns how many
/// segments were sealed.
pub async fn compact_stream(
    streams: &Streams,
    tier: &ColdTier,
    policy: &CompactionPolicy,
    path: &str,
) -> Result<usize, StoreError> {
    let mut sealed = 0;
    loop {
        let mut g = streams.objects.lock(path).await;
        // Seal only durable data: wait for the stream's appends in flight. One that failed
        // leaves the stream for the next pass (after a request reloaded it).
        if streams.settle(&mut g).await.is_err() {
            return Ok(sealed);
        }
        let done = tier
            .compact_stream(streams.store.as_ref(), path, policy)
            .await?
            .is_none();
        drop(g);
        if done {
            return Ok(sealed);
        }
        sealed += 1;
    }
}

/// The sealing lease as the compactor holds it (shared engines).
pub struct SealHold {
    lease: Arc<dyn SealLease>,
    ttl: Duration,
    renewed: Option<Instant>,
}

impl SealHold {
    /// Holds `lease` with TTL `ttl`.
    pub fn new(lease: Arc<dyn SealLease>, ttl: Duration) -> SealHold {
        SealHold {
            lease,
            ttl,
            renewed: None,
        }
    }

    /// True while this node holds the lease: renewed once a third of the TTL passed since the
    /// last renewal (a lost lease stops the pass at the next stream).
    pub async fn held(&mut self) -> Result<bool, StoreError> {
        if self.renewed.is_some_and(|at| at.elapsed() < self.ttl / 3) {
            return Ok(true);
        }
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let token = self.lease.acquire_seal_lease(ttl_ms).await?;
        self.renewed = token.map(|_| Instant::now());
        Ok(token.is_some())
    }
}

/// One pass over every stream; returns how many segments were sealed. A stream whose
/// compaction fails is logged and skipped (the next pass retries it). With `hold` (a shared
/// engine) the pass runs only while this node holds the sealing lease.
pub async fn compact_all(
    streams: &Streams,
    tier: &ColdTier,
    policy: &CompactionPolicy,
    mut hold: Option<&mut SealHold>,
) -> Result<usize, StoreError> {
    let mut sealed = 0;
    let mut after: Option<String> = None;
    loop {
        let page = streams
            .store
            .list_streams("", after.as_deref(), policy.list_page.max(1))
            .await?;
        let Some(last) = page.last().cloned() else {
            return Ok(sealed);
        };
        for path in &page {
            if let Some(hold) = hold.as_deref_mut() {
                if !hold.held().await? {
                    return Ok(sealed);
                }
            }
            match compact_stream(streams, tier, policy, path).await {
                Ok(n) => sealed += n,
                Err(e) => tracing::warn!(stream = %path, error = %e, "compaction failed"),
            }
        }
        after = Some(last);
    }
}

/// Runs [`compact_all`] every `policy.interval` until `stop` resolves. Stopping mid-pass is
/// safe: at most an orphan object, removed with its stream.
pub async fn run_compactor(
    streams: Streams,
    tier: Arc<ColdTier>,
    policy: CompactionPolicy,
    mut hold: Option<SealHold>,
    stop: impl Future<Output = ()>,
) {
    let passes = async {
        loop {
            tokio::time::sleep(policy.interval).await;
            match compact_all(&streams, &tier, &policy, hold.as_mut()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(segments = n, "compaction pass sealed segments"),
                Err(e) => tracing::warn!(error = %e, "compaction pass failed"),
            }
        }
    };
    tokio::select! {
        () = stop => {}
        () = passes => {}
    }
}
