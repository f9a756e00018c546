//! Compaction: moving the oldest hot range of a stream into one cold segment, in the
//! background, never on the append path.
//!
//! A range is sealed when it is big enough ([`CompactionPolicy::min_segment_bytes`]) or when
//! the stream's oldest hot byte has waited long enough ([`CompactionPolicy::max_age`]), and
//! never includes the newest [`CompactionPolicy::keep_hot_bytes`] of the stream: live readers
//! tail the end of a stream, and that should stay a hot range scan.
//!
//! Chunks carry no timestamps, so age is measured from when compaction first saw the current
//! oldest hot offset (an in-memory note per stream, reset by every seal and lost at restart):
//! a range becomes due at most one compaction interval after `max_age`, or `max_age` after a
//! restart. That is all `max_age` is for: bounding how long small streams stay hot.
//!
//! Compaction and appends never conflict: appends only add chunks past the tail, and a seal
//! only deletes chunks below `tail - keep_hot_bytes`. The order "object first, seal second"
//! is the crash-safety argument (see the crate docs); a compactor task cancelled at any
//! `.await` leaves at most an orphan object.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use sessiond_store::{Durability, SegmentRef, StoreError, StreamStore};

use crate::{indexed, ColdTier};

/// When and how much to compact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Seal once at least this many hot bytes (outside the kept tail) are waiting.
    pub min_segment_bytes: usize,
    /// Most bytes in one segment (one more chunk may overshoot it, as chunks are not split).
    pub max_segment_bytes: usize,
    /// Seal a smaller range once its oldest byte has been hot this long; `None`: size only.
    pub max_age: Option<Duration>,
    /// The newest bytes of every stream that always stay hot.
    pub keep_hot_bytes: u64,
    /// Pause between compaction passes over all streams.
    pub interval: Duration,
    /// Streams listed per page while a pass enumerates them.
    pub list_page: usize,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_segment_bytes: 4 << 20,
            max_segment_bytes: 8 << 20,
            max_age: Some(Duration::from_secs(3600)),
            keep_hot_bytes: 64 << 10,
            interval: Duration::from_secs(10),
            list_page: 256,
        }
    }
}

impl ColdTier {
    /// Seals the oldest due hot range of `path` into one segment, if any is due (see the
    /// module docs); returns the new segment. Call it repeatedly to drain a backlog.
    pub async fn compact_stream(
        &self,
        store: &dyn StreamStore,
        path: &str,
        policy: &CompactionPolicy,
    ) -> Result<Option<SegmentRef>, StoreError> {
        let Some(meta) = store.stream_meta(path).await? else {
            self.forget(path);
            return Ok(None);
        };
        // Nothing below the kept tail, nothing to seal: decided before the stream's segments
        // and chunks are read, as a pass visits every stream (most of them small, e.g. one
        // security stream per user) every interval.
        let limit = meta.tail.saturating_sub(policy.keep_hot_bytes);
        if limit == 0 {
            self.forget(path);
            return Ok(None);
        }
        let sealed_end = store.segments(path).await?.last().map_or(0, |s| s.end);
        if limit <= sealed_end {
            self.forget(path);
            return Ok(None);
        }
        let hot = store
            .read_chunks(path, sealed_end, policy.max_segment_bytes)
            .await?;
        let mut range = Vec::new();
        let mut bytes = 0usize;
        for chunk in hot {
            if chunk.end() > limit || (!range.is_empty() && bytes >= policy.max_segment_bytes) {
                break;
            }
            bytes += chunk.data.len();
            range.push(chunk);
        }
        let Some(first) = range.first() else {
            self.forget(path);
            return Ok(None);
        };
        if first.offset < sealed_end {
            // A hot chunk overlapping a segment would break the seal's precondition.
            return Err(StoreError::Corrupt(format!(
                "stream {path}: hot chunk at {} overlaps the segment ending at {sealed_end}",
                first.offset
            )));
        }
        let old_enough = policy
            .max_age
            .is_some_and(|max| self.hot_since(path, first.offset).elapsed() >= max);
        if bytes < policy.min_segment_bytes && !old_enough {
            return Ok(None);
        }
        let (start, end) = (first.offset, range.last().map_or(first.offset, |c| c.end()));
        let segment = SegmentRef {
            start,
            end,
            object_key: self.segment_key(path, start, end)?,
        };
        // Object first, index second: a crash in between leaves an orphan, never a dangling
        // index entry.
        self.put(&segment.object_key, indexed::encode(&range)?)
            .await?;
        if !store
            .seal_segment(path, &segment, Durability::Confirmed)
            .await?
        {
            // Refused: the stream was deleted meanwhile, or another node sealed first (the
            // index moved on; see `StreamStore::seal_segment`). Nothing points to the object.
            self.delete_key(&segment.object_key).await?;
            self.forget(path);
            return Ok(None);
        }
        self.forget(path);
        self.recent.note_sealed_end(path, segment.end);
        metrics::counter!("sessiond_streams_segments_sealed_total").increment(1);
        metrics::counter!("sessiond_streams_segment_bytes_total").increment(bytes as u64);
        Ok(Some(segment))
    }

    /// When compaction first saw `offset` as the stream's oldest hot offset.
    fn hot_since(&self, path: &str, offset: u64) -> Instant {
        let mut seen = self
            .first_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = seen
            .entry(path.to_owned())
            .or_insert((offset, Instant::now()));
        if entry.0 != offset {
            *entry = (offset, Instant::now());
        }
        entry.1
    }

    fn forget(&self, path: &str) {
        self.first_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
    }

    /// One pass over every stream: compacts each until nothing more is due.
    pub async fn compact_all(
        &self,
        store: &dyn StreamStore,
        policy: &CompactionPolicy,
    ) -> Result<usize, StoreError> {
        let mut sealed = 0;
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_streams("", after.as_deref(), policy.list_page.max(1))
                .await?;
            let Some(last) = page.last().cloned() else {
                return Ok(sealed);
            };
            for path in &page {
                loop {
                    match self.compact_stream(store, path, policy).await {
                        Ok(Some(_)) => sealed += 1,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(stream = %path, error = %e, "compaction failed");
                            break;
                        }
                    }
                }
            }
            after = Some(last);
        }
    }
}

/// Runs [`ColdTier::compact_all`] every `policy.interval` until `shutdown` resolves. Stopping
/// mid-pass is safe (at most an orphan object, see the crate docs).
///
/// This loop does not serialize with the stream's writers: if a stream is deleted and
/// re-created while one of its ranges is being sealed, the seal can land on the new
/// incarnation. Servers run compaction through `sessiond_streams::tier`, which calls
/// [`ColdTier::compact_stream`] under the stream's lock; use this only where nothing deletes
/// streams concurrently (tools, tests).
pub fn spawn_compactor(
    tier: Arc<ColdTier>,
    store: Arc<dyn StreamStore>,
    policy: CompactionPolicy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let passes = async {
            loop {
                tokio::time::sleep(policy.interval).await;
                match tier.compact_all(store.as_ref(), &policy).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(segments = n, "compaction pass sealed segments"),
                    Err(e) => tracing::warn!(error = %e, "compaction pass failed"),
                }
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = passes => {}
        }
    })
}
