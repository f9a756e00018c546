//! Reading sealed ranges, and the small in-memory cache that makes catch-up cheap.
//!
//! Why a cache of decoded segments rather than ranged reads: a segment is verified by one
//! CRC over the whole object, so serving a part of it still means fetching and checking all of
//! it. A catch-up reader pages through a stream in requests smaller than a segment (a 4 MiB
//! page over 8 MiB segments), so without a cache every segment was fetched and checked once per
//! page. Keeping the last few decoded segments (a byte budget, `streams.cold.read_cache_bytes`)
//! makes that once per segment, and the frames are slices of the fetched object, so serving a
//! page copies nothing. Objects are immutable and their keys carry a random nonce, so a cached
//! entry can never be stale: a read still asks the engine's index which keys cover the range.
//!
//! The cache also remembers, per stream, where its sealed range ended the last time this
//! process looked ([`ColdTier::sealed_end_hint`]); the read path uses it to ask the cold tier
//! first for offsets below it instead of reading (and discarding) hot chunks. It is only a
//! hint: a stale value costs one extra lookup, never wrong bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use object_store::ObjectStoreExt;
use sessiond_store::{SegmentRef, StoreError, StreamChunk, StreamStore};

use crate::format::{self, Decoded, Frame};
use crate::{unavailable, ColdTier};

/// Default budget of the decoded-segment cache: two segments of the default maximum size.
pub const DEFAULT_READ_CACHE_BYTES: usize = 16 << 20;

/// Recently decoded segments (least recently used first) and per-stream sealed ends.
pub(crate) struct Recent {
    budget: usize,
    inner: Mutex<RecentInner>,
}

#[derive(Default)]
struct RecentInner {
    segments: VecDeque<(String, Arc<Decoded>, usize)>,
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

    fn get(&self, key: &str) -> Option<Arc<Decoded>> {
        let mut inner = self.lock();
        let at = inner.segments.iter().position(|(k, _, _)| k == key)?;
        let entry = inner.segments.remove(at)?;
        let decoded = Arc::clone(&entry.1);
        inner.segments.push_back(entry);
        Some(decoded)
    }

    fn insert(&self, key: &str, decoded: &Arc<Decoded>, size: usize) {
        if size > self.budget {
            return;
        }
        let mut inner = self.lock();
        if inner.segments.iter().any(|(k, _, _)| k == key) {
            return;
        }
        inner
            .segments
            .push_back((key.to_owned(), Arc::clone(decoded), size));
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

    /// One segment, decoded and verified (from the cache when recently read).
    async fn load(&self, segment: &SegmentRef) -> Result<Arc<Decoded>, StoreError> {
        let key = &segment.object_key;
        if let Some(decoded) = self.recent.get(key) {
            return Ok(decoded);
        }
        let bytes = self
            .objects
            .get(&Self::key(key)?)
            .await
            .map_err(|e| unavailable(&format!("reading {key}"), e))?
            .bytes()
            .await
            .map_err(|e| unavailable(&format!("reading {key}"), e))?;
        let size = bytes.len();
        let decoded = format::decode(bytes)?;
        if (decoded.start, decoded.end) != (segment.start, segment.end) {
            return Err(StoreError::Corrupt(format!(
                "segment {key} covers [{}, {}), its index entry says [{}, {})",
                decoded.start, decoded.end, segment.start, segment.end
            )));
        }
        let decoded = Arc::new(decoded);
        self.recent.insert(key, &decoded, size);
        Ok(decoded)
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
        self.recent
            .note_sealed_end(path, segments.last().map_or(0, |s| s.end));
        let mut out: Vec<Frame> = Vec::new();
        let mut bytes = 0usize;
        for segment in segments.iter().filter(|s| s.end > from) {
            let decoded = self.load(segment).await?;
            let first = decoded.chunks.partition_point(|f| f.end() <= from);
            for frame in &decoded.chunks[first..] {
                if !out.is_empty() && bytes >= max_bytes {
                    return Ok(out);
                }
                bytes = bytes.saturating_add(frame.data.len());
                out.push(frame.clone());
            }
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn segment() -> Arc<Decoded> {
        Arc::new(Decoded {
            start: 0,
            end: 1,
            chunks: Vec::new(),
        })
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
    fn sealed_end_hints_follow_the_last_listing() {
        let recent = Recent::new(0);
        recent.note_sealed_end("s", 10);
        recent.note_sealed_end("s", 20);
        assert_eq!(recent.lock().sealed_end.get("s"), Some(&20));
        recent.note_sealed_end("s", 0);
        assert!(recent.lock().sealed_end.is_empty());
    }
}
