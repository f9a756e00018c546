//! The last appended chunks of a stream, kept in memory for the readers waiting at its tail.
//!
//! Why: after an append every live reader (SSE, long-poll) of the stream wakes at once. If each
//! re-locked the stream to learn the new tail and re-read the new bytes from the engine, 1,000
//! subscribers would mean 1,000 lock acquisitions and 1,000 engine reads queued in front of the
//! writer's next append (measured in docs/benchmarks.md). Instead a pipelined append, once
//! durable, publishes its new tail and its chunks here before waking the readers; a woken
//! reader takes both from here without the lock and without the engine.
//!
//! What keeps it correct:
//! - Only durable bytes are published (the pipeline's completion, after the commit), in log
//!   order; chunks below a tail never change, so a published chunk is valid for its
//!   incarnation for as long as it is not trimmed or compacted.
//! - Every other change (close, delete, trim, compaction, fork, expiry, a failed commit) goes
//!   through `StreamObject::notify`, which calls [`Recent::invalidate`]: the epoch moves and
//!   the chunks are dropped, so a reader whose snapshot predates it refreshes under the lock
//!   as before.
//! - A reader uses the published tail only when the epoch is the one of its snapshot and the
//!   incarnation (`created_at`) is its stream's; otherwise, or when nothing new was published
//!   (an evicted object, a wake from another node), it refreshes.
//!
//! Several nodes: only an exclusive engine pipelines appends (`Streams::pipelines`), so on a
//! shared engine (Redis) nothing is ever published here: every wake, local or from another
//! node through the engine's pub/sub, makes the reader refresh and read the engine as before.
//!
//! Memory: chunks are kept only while the stream has waiting readers, and at most
//! `streams.fanout_cache_bytes` per stream (oldest dropped first); an append larger than that
//! is not kept (its readers read the engine).
//!
//! The last SSE data event is kept too ([`Recent::event`]): every subscriber woken by the same
//! append reads the same page from the same offset and would encode the same bytes, so the
//! first one encodes and the others send its bytes. It is keyed by the page's start and the
//! reader's tail (a page is cut at the tail) and served only under the epoch it was encoded
//! in, like the chunks; at most `fanout_cache_bytes` of it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use sessiond_store::{Millis, StreamChunk};

use crate::cold::SharedChunk;

/// One stream's published tail and recent chunks (shared by its object and its readers).
#[derive(Default)]
pub struct Recent {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recent")
    }
}

#[derive(Default)]
struct Inner {
    /// Moves with every change that is not a plain append.
    epoch: u64,
    /// The incarnation the tail and chunks belong to.
    created_at: Millis,
    /// The durable tail of the last published append (0 = none since the last invalidation).
    tail: u64,
    /// Contiguous chunks ending at `tail`, oldest first.
    chunks: VecDeque<SharedChunk>,
    bytes: usize,
    /// The last encoded SSE data event of this incarnation and epoch.
    event: Option<(EventKey, Event)>,
}

/// What an SSE data event was encoded from: a page of the stream from `from`, cut at `tail`,
/// of one incarnation (`created_at`, whose content type fixes the encoding: base64 or text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventKey {
    pub created_at: Millis,
    pub epoch: u64,
    pub from: u64,
    pub tail: u64,
}

/// An encoded SSE data event and the offset after its page.
#[derive(Clone, Debug)]
pub struct Event {
    pub next: u64,
    pub bytes: Bytes,
}

/// What a woken reader learns from a publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub tail: u64,
}

impl Recent {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current epoch (taken with a snapshot, under the stream's lock).
    pub fn epoch(&self) -> u64 {
        self.inner().epoch
    }

    /// Forgets everything published: a change that is not a plain append happened.
    pub fn invalidate(&self) {
        let mut inner = self.inner();
        inner.epoch = inner.epoch.wrapping_add(1);
        inner.tail = 0;
        inner.chunks.clear();
        inner.bytes = 0;
        inner.event = None;
    }

    /// The data event encoded for `key`, if it is kept and nothing but appends happened since
    /// `key`'s epoch.
    pub fn event(&self, key: &EventKey) -> Option<Event> {
        let inner = self.inner();
        match &inner.event {
            Some((k, e)) if k == key && inner.epoch == key.epoch => Some(e.clone()),
            _ => None,
        }
    }

    /// Keeps `event` for the readers that follow (when its epoch is still current and it is
    /// within `budget` bytes).
    pub fn keep_event(&self, key: EventKey, event: &Event, budget: usize) {
        let mut inner = self.inner();
        if inner.epoch == key.epoch && event.bytes.len() <= budget {
            inner.event = Some((key, event.clone()));
        }
    }

    /// Publishes a durable append of `created_at`'s incarnation ending at `tail`. `chunks` is
    /// `None` when they are not kept (no reader waits, or larger than `budget`); the tail is
    /// published either way.
    pub fn publish(
        &self,
        created_at: Millis,
        tail: u64,
        chunks: Option<Vec<SharedChunk>>,
        budget: usize,
    ) {
        let mut inner = self.inner();
        if inner.created_at != created_at {
            inner.chunks.clear();
            inner.bytes = 0;
            inner.created_at = created_at;
        }
        inner.tail = inner.tail.max(tail);
        let Some(chunks) = chunks else {
            // No reader waits (or the append is too large to keep): nothing kept for them.
            inner.chunks.clear();
            inner.bytes = 0;
            inner.event = None;
            return;
        };
        // Kept chunks stay contiguous: a gap (an append that was not kept) starts afresh.
        let first = chunks.first().map(|c| c.offset);
        if inner.chunks.back().map(SharedChunk::end) != first {
            inner.chunks.clear();
            inner.bytes = 0;
        }
        for c in chunks {
            inner.bytes += c.data.len();
            inner.chunks.push_back(c);
        }
        while inner.bytes > budget {
            let Some(old) = inner.chunks.pop_front() else {
                break;
            };
            inner.bytes -= old.data.len();
        }
    }

    /// The published tail, if something was published for `created_at` since `epoch`.
    pub fn published(&self, created_at: Millis, epoch: u64) -> Option<Published> {
        let inner = self.inner();
        (inner.epoch == epoch && inner.created_at == created_at && inner.tail > 0)
            .then_some(Published { tail: inner.tail })
    }

    /// The kept chunks of `created_at` from the one holding `from` on (contiguous), or `None`
    /// when `from` is not in memory.
    pub fn chunks_from(
        &self,
        created_at: Millis,
        epoch: u64,
        from: u64,
    ) -> Option<Vec<SharedChunk>> {
        let inner = self.inner();
        if inner.epoch != epoch || inner.created_at != created_at {
            return None;
        }
        // Chunks are in offset order: a binary search (up to `fanout_cache_bytes` of small
        // appends is thousands of chunks).
        let first = inner.chunks.partition_point(|c| c.end() <= from);
        if inner.chunks.get(first)?.offset > from {
            return None;
        }
        Some(inner.chunks.range(first..).cloned().collect())
    }
}

/// Copies of an append's chunks for [`Recent::publish`], or `None` when they total more than
/// `budget` bytes.
pub fn keep(chunks: &[StreamChunk], budget: usize) -> Option<Vec<SharedChunk>> {
    let total: usize = chunks.iter().map(|c| c.data.len()).sum();
    (total <= budget).then(|| {
        chunks
            .iter()
            .map(|c| SharedChunk {
                offset: c.offset,
                data: Bytes::copy_from_slice(&c.data),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, len: usize) -> SharedChunk {
        SharedChunk {
            offset,
            data: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn serves_contiguous_chunks_of_the_same_epoch_and_incarnation() {
        let r = Recent::default();
        let epoch = r.epoch();
        assert_eq!(r.published(7, epoch), None);
        r.publish(7, 10, Some(vec![chunk(0, 10)]), 100);
        r.publish(7, 15, Some(vec![chunk(10, 5)]), 100);
        assert_eq!(r.published(7, epoch), Some(Published { tail: 15 }));
        assert_eq!(r.published(8, epoch), None);
        let got = r.chunks_from(7, epoch, 12).map(|c| c.len());
        assert_eq!(got, Some(1));
        assert_eq!(r.chunks_from(7, epoch, 3).map(|c| c.len()), Some(2));
        assert!(r.chunks_from(7, epoch, 15).is_none());
        // Over budget: the oldest goes; an offset below what is kept is not served.
        r.publish(7, 110, Some(vec![chunk(15, 95)]), 100);
        assert!(r.chunks_from(7, epoch, 3).is_none());
        assert_eq!(r.chunks_from(7, epoch, 12).map(|c| c.len()), Some(2));
        // A gap restarts the kept run; an invalidation ends everything for old snapshots.
        r.publish(7, 200, None, 100);
        assert!(r.chunks_from(7, epoch, 12).is_none());
        r.publish(7, 210, Some(vec![chunk(200, 10)]), 100);
        assert_eq!(r.chunks_from(7, epoch, 205).map(|c| c.len()), Some(1));
        r.invalidate();
        assert_eq!(r.published(7, epoch), None);
        assert!(r.chunks_from(7, epoch, 205).is_none());
        assert_eq!(r.published(7, r.epoch()), None);
    }

    #[test]
    fn an_encoded_event_serves_the_same_page_until_anything_but_an_append() {
        let r = Recent::default();
        let key = EventKey {
            created_at: 7,
            epoch: r.epoch(),
            from: 10,
            tail: 15,
        };
        let event = Event {
            next: 15,
            bytes: Bytes::from_static(b"event: data\ndata:x\n\n"),
        };
        r.keep_event(key, &event, 8);
        assert!(r.event(&key).is_none(), "over the budget: not kept");
        r.keep_event(key, &event, 100);
        assert_eq!(r.event(&key).map(|e| e.next), Some(15));
        // Another page (a reader with another tail or position) is not this event.
        assert!(r.event(&EventKey { tail: 20, ..key }).is_none());
        assert!(r.event(&EventKey { from: 11, ..key }).is_none());
        // Appends keep it; an append nobody waits for, or any other change, drops it.
        r.publish(7, 20, Some(vec![chunk(15, 5)]), 100);
        assert!(r.event(&key).is_some());
        r.publish(7, 25, None, 100);
        assert!(r.event(&key).is_none());
        r.keep_event(key, &event, 100);
        r.invalidate();
        assert!(r.event(&key).is_none());
        // A reader of the old epoch cannot put it back.
        r.keep_event(key, &event, 100);
        assert!(r
            .event(&EventKey {
                epoch: r.epoch(),
                ..key
            })
            .is_none());
    }

    #[test]
    fn keeps_only_appends_within_the_budget() {
        let c = |offset, len| StreamChunk {
            offset,
            data: vec![1; len],
        };
        assert_eq!(keep(&[c(0, 4), c(4, 4)], 8).map(|v| v.len()), Some(2));
        assert!(keep(&[c(0, 4), c(4, 5)], 8).is_none());
    }
}
