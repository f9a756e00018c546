//! The in-memory engine's streams: a map of paths to metadata, hot chunks and segments.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::MemoryEngine;
use crate::streams::{
    CheckedWrite, Commit, CommitTicket, ForkSource, ProducerRecord, ProducerUpdate, SegmentRef,
    StreamChunk, StreamMeta, StreamStore, Trimmed,
};
use crate::{Durability, Millis, Result};

pub(super) struct MemoryStream {
    meta: StreamMeta,
    /// offset -> bytes
    chunks: BTreeMap<u64, Vec<u8>>,
    segments: Vec<SegmentRef>,
    /// producer id -> row
    producers: BTreeMap<String, ProducerRecord>,
}

impl MemoryStream {
    fn new(meta: &StreamMeta, chunks: &[StreamChunk]) -> MemoryStream {
        MemoryStream {
            meta: meta.clone(),
            chunks: chunks.iter().map(|c| (c.offset, c.data.clone())).collect(),
            segments: Vec::new(),
            producers: BTreeMap::new(),
        }
    }

    /// A fork's change of its source: the state and expiry, never the tail or start.
    fn set_state(&mut self, source: &ForkSource) {
        self.meta.state.clone_from(&source.state);
        self.meta.expires_at = source.expires_at;
    }

    /// Applies a commit's producer rows (see `ProducerUpdate`).
    fn apply(&mut self, update: ProducerUpdate) {
        let written: Vec<String> = update.upsert.iter().map(|r| r.id.clone()).collect();
        for record in update.upsert {
            self.producers.insert(record.id.clone(), record);
        }
        if update.max_producers == 0 {
            return;
        }
        while self.producers.len() > update.max_producers {
            let victim = self
                .producers
                .values()
                .filter(|r| !written.contains(&r.id))
                .min_by(|a, b| (a.used_at, &a.id).cmp(&(b.used_at, &b.id)))
                .map(|r| r.id.clone());
            match victim {
                Some(id) => self.producers.remove(&id),
                None => break,
            };
        }
    }
}

impl MemoryEngine {
    /// The compare-and-set of a commit: the tail and, if given, the state must match.
    fn apply_commit(
        &self,
        path: &str,
        expected_tail: u64,
        expected_state: Option<&[u8]>,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
    ) -> Result<Commit> {
        self.with(|s| match s.streams.get_mut(path) {
            Some(st)
                if st.meta.tail == expected_tail
                    && expected_state.is_none_or(|e| e == st.meta.state) =>
            {
                for c in chunks {
                    st.chunks.insert(c.offset, c.data);
                }
                st.meta = StreamMeta {
                    start: st.meta.start,
                    ..meta
                };
                st.apply(producers);
                Commit::Written
            }
            _ => Commit::Conflict,
        })
    }
}

#[async_trait]
impl StreamStore for MemoryEngine {
    async fn stream_meta(&self, path: &str) -> Result<Option<StreamMeta>> {
        self.with(|s| s.streams.get(path).map(|st| st.meta.clone()))
    }

    async fn create_stream_with_producers(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        producers: ProducerUpdate,
        _: Durability,
    ) -> Result<bool> {
        self.with(|s| {
            if s.streams.contains_key(&meta.path) {
                return false;
            }
            let mut stream = MemoryStream::new(meta, chunks);
            stream.apply(producers);
            s.streams.insert(meta.path.clone(), stream);
            true
        })
    }

    async fn create_fork(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        source: &ForkSource,
        _: Durability,
    ) -> Result<bool> {
        self.with(|s| {
            if s.streams.contains_key(&meta.path) {
                return false;
            }
            let Some(src) = s
                .streams
                .get_mut(&source.path)
                .filter(|src| source.matches(&src.meta.state, src.meta.start))
            else {
                return false;
            };
            src.set_state(source);
            s.streams
                .insert(meta.path.clone(), MemoryStream::new(meta, chunks));
            true
        })
    }

    async fn delete_fork(&self, path: &str, source: &ForkSource, _: Durability) -> Result<bool> {
        self.with(|s| {
            let source_ok = s
                .streams
                .get(&source.path)
                .is_some_and(|src| source.matches(&src.meta.state, src.meta.start));
            if !source_ok || s.streams.remove(path).is_none() {
                return false;
            }
            if let Some(src) = s.streams.get_mut(&source.path) {
                src.set_state(source);
            }
            true
        })
    }

    async fn stream_producer(&self, path: &str, id: &str) -> Result<Option<ProducerRecord>> {
        self.with(|s| {
            s.streams
                .get(path)
                .and_then(|st| st.producers.get(id).cloned())
        })
    }

    async fn list_stream_producers(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProducerRecord>> {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        self.with(|s| {
            s.streams.get(path).map_or_else(Vec::new, |st| {
                st.producers
                    .range((lower, Bound::Unbounded))
                    .take(limit)
                    .map(|(_, r)| r.clone())
                    .collect()
            })
        })
    }

    async fn commit_enqueue(
        &self,
        path: &str,
        expected_tail: u64,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
        _: Durability,
    ) -> Result<CommitTicket> {
        // Applied at once, so the order is the call order and the ticket is already resolved.
        let outcome = self.apply_commit(path, expected_tail, None, chunks, meta, producers)?;
        Ok(Box::pin(std::future::ready(Ok(outcome))))
    }

    async fn commit_checked(&self, w: CheckedWrite<'_>) -> Result<Commit> {
        let (chunks, meta) = (w.chunks.to_vec(), w.meta.clone());
        let state = Some(w.expected_state);
        self.apply_commit(w.path, w.expected_tail, state, chunks, meta, w.producers)
    }

    async fn read_chunks(
        &self,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StreamChunk>> {
        self.with(|s| {
            let Some(st) = s.streams.get(path) else {
                return Vec::new();
            };
            // The chunk containing `from` may start before it.
            let start = st
                .chunks
                .range(..=from)
                .next_back()
                .map(|(o, _)| *o)
                .unwrap_or(from);
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for (offset, data) in st.chunks.range(start..) {
                if offset + data.len() as u64 <= from {
                    continue;
                }
                if !out.is_empty() && bytes >= max_bytes {
                    break;
                }
                bytes += data.len();
                out.push(StreamChunk {
                    offset: *offset,
                    data: data.clone(),
                });
            }
            out
        })
    }

    async fn delete_stream(&self, path: &str, _: Durability) -> Result<bool> {
        self.with(|s| s.streams.remove(path).is_some())
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.with(|s| {
            s.streams
                .keys()
                .filter(|p| p.starts_with(prefix) && after.is_none_or(|a| p.as_str() > a))
                .take(limit)
                .cloned()
                .collect()
        })
    }

    async fn expired_streams(&self, now: Millis, limit: usize) -> Result<Vec<String>> {
        self.with(|s| {
            s.streams
                .values()
                .filter(|st| st.meta.expires_at.is_some_and(|at| at <= now))
                .take(limit)
                .map(|st| st.meta.path.clone())
                .collect()
        })
    }

    async fn segments(&self, path: &str) -> Result<Vec<SegmentRef>> {
        self.with(|s| {
            s.streams
                .get(path)
                .map(|st| st.segments.clone())
                .unwrap_or_default()
        })
    }

    async fn seal_segment(&self, path: &str, segment: &SegmentRef, _: Durability) -> Result<bool> {
        self.with(|s| {
            let Some(st) = s.streams.get_mut(path) else {
                return false;
            };
            let sealed_end = match st.segments.last() {
                Some(last) => Some(last.end),
                None => st.chunks.keys().next().copied(),
            };
            if sealed_end != Some(segment.start) {
                return false;
            }
            st.chunks.retain(|offset, data| {
                !(segment.start <= *offset && offset + data.len() as u64 <= segment.end)
            });
            st.segments.push(segment.clone());
            true
        })
    }

    async fn trim_stream(
        &self,
        path: &str,
        before: u64,
        max_chunks: usize,
        expected_state: Option<&[u8]>,
        _: Durability,
    ) -> Result<Option<Trimmed>> {
        self.with(|s| {
            let st = s
                .streams
                .get_mut(path)
                .filter(|st| expected_state.is_none_or(|e| e == st.meta.state))?;
            let start = st.meta.start.max(before.min(st.meta.tail));
            st.meta.start = start;
            let below: Vec<u64> = st
                .chunks
                .range(..start)
                .filter(|(o, d)| *o + d.len() as u64 <= start)
                .map(|(o, _)| *o)
                .take(max_chunks.saturating_add(1))
                .collect();
            let chunks = below.len().min(max_chunks);
            for offset in &below[..chunks] {
                st.chunks.remove(offset);
            }
            let (segments, kept) = std::mem::take(&mut st.segments)
                .into_iter()
                .partition(|g| g.end <= start);
            st.segments = kept;
            Some(Trimmed {
                start,
                chunks,
                more: below.len() > chunks,
                segments,
            })
        })
    }

    async fn drop_chunks(&self, path: &str, offsets: &[u64], _: Durability) -> Result<bool> {
        self.with(|s| {
            let Some(st) = s.streams.get_mut(path) else {
                return false;
            };
            if !offsets.iter().all(|o| st.chunks.contains_key(o)) {
                return false;
            }
            for o in offsets {
                st.chunks.remove(o);
            }
            true
        })
    }
}
