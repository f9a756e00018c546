//! Reading sealed ranges, and the small in-memory cache that makes catch-up cheap.
//!
//! Format-2 segments (`indexed.rs`, what compaction writes) are read by range: the cache keeps
//! each recently used segment's verified frame index, and a read fetches and checks only the
//! frames it returns (one ranged get). Memory per reader is then its page, whatever the size of
//! the segment, and a segment is never decoded whole.
//!
//! Format-1 segments (written before format 2) can only be verified whole (one CRC over the
//! object), so for them the cache keeps the last few decoded segments (within the same byte
//! budget, `streams.cold.read_cache_bytes`): a catch-up reader paging through one fetches and
//! checks it once instead of once per page. Frames are slices of the fetched bytes either way,
//! so serving a page copies nothing. Objects are immutable and their keys carry a random nonce,
//! so a cached entry can never be stale: a read still asks the engine's index which keys cover
//! the range.
//!
//! The cache also remembers, per stream, where its sealed range ended the last time this
//! process looked ([`ColdTier::sealed_end_hint`]); the read path uses it to ask the cold tier
//! first for offsets below it instead of reading (and discarding) hot chunks. It is only a
//! hint: a stale value costs one extra lookup, never wrong bytes.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use sessiond_store::{SegmentRef, StoreError, StreamChunk, StreamStore};

use crate::format::{self, Decoded, Frame};
use crate::indexed::{Footer, Index};
use crate::{unavailable, ColdTier};

/// How much of a segment's end the first read of it fetches: the footer, and with it the index
/// of any segment of up to a few thousand frames, in one request.
const SUFFIX_READ: usize = 64 << 10;

/// A segment as the cache keeps it.
#[derive(Clone)]
pub(crate) enum Loaded {
    /// Format 1: decoded whole.
    Whole(Arc<Decoded>),
    /// Format 2: its verified index.
    Indexed(Arc<Index>),
}

/// Reads asking for less than this get no read-ahead: the read path's probes of one chunk
/// (message boundaries, trims) are no pages a reader follows.
const READ_AHEAD_MIN_PAGE: usize = 4 << 10;

/// Default budget of the decoded-segment cache: two segments of the default maximum size.
pub const DEFAULT_READ_CACHE_BYTES: usize = 16 << 20;

/// Recently decoded segments (least recently used first) and per-stream sealed ends.
pub(crate) struct Recent {
    budget: usize,
    inner: Mutex<RecentInner>,
}

#[derive(Default)]
struct RecentInner {
    segments: VecDeque<(String, Loaded, usize)>,
    bytes: usize,
    sealed_end: HashMap<String, u64>,
}

impl Recent {
    pub(crate) fn new(budget: usize) -> Recent {
        Recent {
            budget,
            inner: Mutex::new(RecentInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RecentInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Option<Loaded> {
        let mut inner = self.lock();
        let at = inner.segments.iter().position(|(k, _, _)| k == key)?;
        let entry = inner.segments.remove(at)?;
        let loaded = entry.1.clone();
        inner.segments.push_back(entry);
        Some(loaded)
    }

    fn insert(&self, key: &str, loaded: &Loaded, size: usize) {
        if size > self.budget {
            return;
        }
        let mut inner = self.lock();
        if inner.segments.iter().any(|(k, _, _)| k == key) {
            return;
        }
        inner
            .segments
            .push_back((key.to_owned(), loaded.clone(), size));
        inner.bytes += size;
        while inner.bytes > self.budget {
            let Some((_, _, evicted)) = inner.segments.pop_front() else {
                break;
            };
            inner.bytes -= evicted;
        }
    }

    pub(crate) fn note_sealed_end(&self, path: &str, end: u64) {
        let mut inner = self.lock();
        if end == 0 {
            inner.sealed_end.remove(path);
        } else if let Some(known) = inner.sealed_end.get_mut(path) {
            *known = end;
        } else {
            inner.sealed_end.insert(path.to_owned(), end);
        }
    }

    /// Drops what is known about a deleted stream (`dir`: its key prefix).
    pub(crate) fn forget_stream(&self, path: &str, dir: &str) {
        let mut inner = self.lock();
        inner.sealed_end.remove(path);
        let mut freed = 0;
        inner.segments.retain(|(key, _, size)| {
            let keep = !key.starts_with(dir);
            if !keep {
                freed += size;
            }
            keep
        });
        inner.bytes -= freed;
    }
}

impl ColdTier {
    /// Where `path`'s sealed range ended when this process last listed or sealed its
    /// segments (0 when unknown): offsets below it are most likely cold.
    pub fn sealed_end_hint(&self, path: &str) -> u64 {
        self.recent
            .lock()
            .sealed_end
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Bytes `range` of an object: from the file itself when the tier is a local directory.
    fn get_range(
        &self,
        location: object_store::path::Path,
        range: Range<u64>,
    ) -> impl Future<Output = object_store::Result<Bytes>> + Send + 'static {
        let (objects, local) = (self.objects.clone(), self.local.clone());
        async move {
            match local {
                Some(files) => files.get_range(&location, range).await,
                None => objects.get_range(&location, range).await,
            }
        }
    }

    /// One segment's index (format 2) or whole decoded content (format 1), verified, from
    /// the cache when recently read.
    async fn load(&self, segment: &SegmentRef) -> Result<Loaded, StoreError> {
        let key = &segment.object_key;
        if let Some(loaded) = self.recent.get(key) {
            return Ok(loaded);
        }
        let location = Self::key(key)?;
        let failed = |e: object_store::Error| unavailable(&format!("reading {key}"), e);
        let suffix = self
            .objects
            .get_opts(
                &location,
                GetOptions::new().with_range(Some(GetRange::Suffix(SUFFIX_READ as u64))),
            )
            .await
            .map_err(failed)?;
        let size = suffix.meta.size;
        let tail = suffix.bytes().await.map_err(failed)?;
        let (loaded, memory) = match Footer::parse(&tail, size)? {
            Some(footer) => {
                let range = footer.index_range();
                let fetched_from = size - tail.len() as u64;
                let index = if range.start >= fetched_from {
                    let at = (range.start - fetched_from) as usize;
                    let to = (range.end - fetched_from) as usize;
                    let bytes = tail.get(at..to).ok_or_else(|| {
                        StoreError::Corrupt(format!("segment {key}: index range"))
                    })?;
                    footer.index(bytes)?
                } else {
                    let bytes = self
                        .get_range(location.clone(), range)
                        .await
                        .map_err(failed)?;
                    footer.index(&bytes)?
                };
                let memory = index.memory();
                (Loaded::Indexed(Arc::new(index)), memory)
            }
            None => {
                let bytes = if tail.len() as u64 == size {
                    tail
                } else {
                    self.objects
                        .get(&location)
                        .await
                        .map_err(failed)?
                        .bytes()
                        .await
                        .map_err(failed)?
                };
                let size = bytes.len();
                (Loaded::Whole(Arc::new(format::decode(bytes)?)), size)
            }
        };
        let covers = match &loaded {
            Loaded::Whole(d) => (d.start, d.end),
            Loaded::Indexed(i) => (i.start, i.end),
        };
        if covers != (segment.start, segment.end) {
            return Err(StoreError::Corrupt(format!(
                "segment {key} covers [{}, {}), its index entry says [{}, {})",
                covers.0, covers.1, segment.start, segment.end
            )));
        }
        self.recent.insert(key, &loaded, memory);
        Ok(loaded)
    }

    /// Frames of one segment of `path` ending after `from`, about `max_bytes` of them (at
    /// least one).
    async fn segment_frames(
        &self,
        path: &str,
        segment: &SegmentRef,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<Frame>, StoreError> {
        match self.load(segment).await? {
            Loaded::Whole(decoded) => {
                let first = decoded.chunks.partition_point(|f| f.end() <= from);
                let mut out = Vec::new();
                let mut bytes = 0usize;
                for frame in &decoded.chunks[first..] {
                    if !out.is_empty() && bytes >= max_bytes {
                        break;
                    }
                    bytes = bytes.saturating_add(frame.data.len());
                    out.push(frame.clone());
                }
                Ok(out)
            }
            Loaded::Indexed(index) => {
                let frames = index.covering(from, max_bytes);
                if frames.is_empty() {
                    return Ok(Vec::new());
                }
                let key = &segment.object_key;
                let range = index.file_range(frames.clone());
                let bytes = match self.ahead.take(path, key, &range).await {
                    Some(bytes) => bytes,
                    None => self
                        .get_range(Self::key(key)?, range)
                        .await
                        .map_err(|e| unavailable(&format!("reading {key}"), e))?,
                };
                index.frames(frames, &bytes)
            }
        }
    }

    /// Frames of `path`'s sealed segments that end after `from`, in offset order, with their
    /// original boundaries, stopping once `max_bytes` were collected (at least one frame when
    /// any exists): the same contract as `StreamStore::read_chunks` for the hot log. Empty
    /// when `from` is at or after the end of the last segment: the caller reads hot from there.
    pub async fn read_frames(
        &self,
        store: &dyn StreamStore,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<Frame>, StoreError> {
        let segments = store.segments(path).await?;
        check_order(path, &segments)?;
        self.recent
            .note_sealed_end(path, segments.last().map_or(0, |s| s.end));
        let mut out: Vec<Frame> = Vec::new();
        let mut bytes = 0usize;
        for segment in segments.iter().filter(|s| s.end > from) {
            if !out.is_empty() && bytes >= max_bytes {
                break;
            }
            let left = max_bytes.saturating_sub(bytes);
            for frame in self.segment_frames(path, segment, from, left).await? {
                bytes = bytes.saturating_add(frame.data.len());
                out.push(frame);
            }
        }
        if bytes >= max_bytes && max_bytes >= READ_AHEAD_MIN_PAGE {
            if let Some(first) = out.first() {
                let next = from.max(first.offset).saturating_add(max_bytes as u64);
                self.read_ahead(path, &segments, next, max_bytes);
            }
        }
        Ok(out)
    }

    /// Starts reading the frames from `next` (where a full binary page from this read ends),
    /// about `max_bytes` of them, when the segment holding `next` has its index cached. Never
    /// fails the read that asked for it: a key it cannot use only means no read-ahead (the
    /// next request reads, and reports, itself).
    fn read_ahead(&self, path: &str, segments: &[SegmentRef], next: u64, max_bytes: usize) {
        let Some(segment) = segments.iter().find(|s| s.start <= next && next < s.end) else {
            return;
        };
        let Some(Loaded::Indexed(index)) = self.recent.get(&segment.object_key) else {
            return;
        };
        let Ok(location) = Self::key(&segment.object_key) else {
            return;
        };
        let range = index.file_range(index.covering(next, max_bytes));
        let fetch = self.get_range(location, range.clone());
        self.ahead.start(
            path,
            &segment.object_key,
            range,
            async move { fetch.await.ok() },
        );
    }

    /// [`ColdTier::read_frames`] as owned chunks (one copy each).
    pub async fn read(
        &self,
        store: &dyn StreamStore,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StreamChunk>, StoreError> {
        let frames = self.read_frames(store, path, from, max_bytes).await?;
        Ok(frames.into_iter().map(Into::into).collect())
    }
}

/// The engine's segment index of a stream must list non-empty ranges in offset order without
/// overlaps: reading overlapping segments would serve bytes twice at different offsets.
fn check_order(path: &str, segments: &[SegmentRef]) -> Result<(), StoreError> {
    let mut previous_end = 0;
    for (i, s) in segments.iter().enumerate() {
        if s.start >= s.end || (i > 0 && s.start < previous_end) {
            tracing::error!(
                stream = path,
                start = s.start,
                end = s.end,
                previous_end,
                "the segment index of a stream is damaged (empty or overlapping ranges)"
            );
            return Err(StoreError::Corrupt(format!(
                "segment index of {path}: [{}, {}) after a segment ending at {previous_end}",
                s.start, s.end
            )));
        }
        previous_end = s.end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn segment() -> Loaded {
        Loaded::Whole(Arc::new(Decoded {
            start: 0,
            end: 1,
            chunks: Vec::new(),
        }))
    }

    #[test]
    fn the_cache_keeps_its_byte_budget_and_evicts_least_recently_used() {
        let recent = Recent::new(10);
        recent.insert("s/a", &segment(), 4);
        recent.insert("s/b", &segment(), 4);
        assert!(recent.get("s/a").is_some(), "a is now the most recent");
        recent.insert("t/c", &segment(), 4);
        assert!(recent.get("s/b").is_none(), "b was the least recently used");
        assert!(recent.get("s/a").is_some() && recent.get("t/c").is_some());
        recent.insert("t/big", &segment(), 11);
        assert!(
            recent.get("t/big").is_none(),
            "larger than the whole budget"
        );
        recent.forget_stream("s", "s/");
        assert!(recent.get("s/a").is_none());
        assert!(recent.get("t/c").is_some());
        assert_eq!(recent.lock().bytes, 4);
        let none = Recent::new(0);
        none.insert("s/a", &segment(), 1);
        assert!(none.get("s/a").is_none());
    }

    #[test]
    fn overlapping_or_empty_segment_ranges_are_refused() {
        let seg = |start, end| SegmentRef {
            start,
            end,
            object_key: format!("s/{start}"),
        };
        assert!(check_order("s", &[seg(0, 10), seg(10, 20)]).is_ok());
        assert!(check_order("s", &[]).is_ok());
        for bad in [
            vec![seg(0, 10), seg(5, 20)],
            vec![seg(0, 10), seg(0, 10)],
            vec![seg(10, 20), seg(0, 10)],
            vec![seg(3, 3)],
        ] {
            assert!(
                matches!(check_order("s", &bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sealed_end_hints_follow_the_last_listing() {
        let recent = Recent::new(0);
        recent.note_sealed_end("s", 10);
        recent.note_sealed_end("s", 20);
        assert_eq!(recent.lock().sealed_end.get("s"), Some(&20));
        recent.note_sealed_end("s", 0);
        assert!(recent.lock().sealed_end.is_empty());
    }
}
