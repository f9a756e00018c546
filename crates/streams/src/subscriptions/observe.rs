//! How subscriptions learn about appends: a [`StreamStore`] wrapper that reports every
//! successful write after it returned.
//!
//! Observing the store instead of hooking each protocol operation means every path that
//! writes data (create with a body, append, append+close, forks, internal wake-stream writes)
//! is seen without touching those operations, and a change is reported only once the engine
//! acknowledged it (durably, for confirmed writes): a wake never points at data a crash could
//! take back. Reporting is a non-blocking send on a bounded channel, and nothing at all is
//! sent while no subscription exists, so the append path pays one atomic load. The channel
//! never makes a writer wait (the subscription task itself appends wake events, so waiting
//! could deadlock); when it is full the change is dropped and an overflow flag is raised,
//! and the task then rescans every subscription instead of trusting the changes it saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use sessiond_store::{
    Appended, CheckedCommit, CheckedWrite, Commit, CommitTicket, Durability, ForkSource, Millis,
    ProducerBefore, ProducerRecord, ProducerUpdate, Result, SegmentRef, StreamChunk, StreamMeta,
    StreamStore,
};
use tokio::sync::mpsc;

/// One observed write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Data was written to `path`: the tail moved from `before` to `tail` (a new stream
    /// reports `before` = its first offset).
    Appended {
        /// Stream path.
        path: String,
        /// Tail before the write.
        before: u64,
        /// Tail after it.
        tail: u64,
    },
    /// A stream was created without data.
    Created {
        /// Stream path.
        path: String,
        /// Its tail.
        tail: u64,
    },
    /// The stream was deleted.
    Deleted {
        /// Stream path.
        path: String,
    },
}

/// The sending side, shared by the wrapper and the subscription service (which switches it
/// on once a subscription exists).
#[derive(Clone)]
pub struct Observer {
    tx: mpsc::Sender<Change>,
    active: Arc<AtomicBool>,
    overflow: Arc<AtomicBool>,
}

/// A new observer queueing at most `capacity` changes, and the receiver of its changes.
pub fn observer(capacity: usize) -> (Observer, mpsc::Receiver<Change>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let observer = Observer {
        tx,
        active: Arc::new(AtomicBool::new(false)),
        overflow: Arc::new(AtomicBool::new(false)),
    };
    (observer, rx)
}

impl Observer {
    /// Wraps `store` so its writes are reported.
    pub fn wrap(&self, store: Arc<dyn StreamStore>) -> Arc<dyn StreamStore> {
        Arc::new(ObservedStore {
            inner: store,
            observer: self.clone(),
        })
    }

    /// Starts (or stops) reporting.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Release);
    }

    /// True (once) if changes were dropped since the last call.
    pub fn take_overflow(&self) -> bool {
        self.overflow.swap(false, Ordering::AcqRel)
    }

    fn send(&self, change: impl FnOnce() -> Change) {
        if self.active.load(Ordering::Acquire) {
            if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(change()) {
                self.overflow.store(true, Ordering::Release);
            }
        }
    }
}

struct ObservedStore {
    inner: Arc<dyn StreamStore>,
    observer: Observer,
}

impl ObservedStore {
    /// Reports a new stream (with its initial data, if any).
    fn created(&self, meta: &StreamMeta, chunks: &[StreamChunk]) {
        self.observer.send(|| match chunks.first() {
            Some(first) => Change::Appended {
                path: meta.path.clone(),
                before: first.offset,
                tail: meta.tail,
            },
            None => Change::Created {
                path: meta.path.clone(),
                tail: meta.tail,
            },
        });
    }

    /// Reports a written compare-and-set commit that appended `seen.chunks` after
    /// `seen.before`.
    fn committed(&self, written: bool, seen: Seen<'_>) {
        if written && !seen.chunks.is_empty() {
            self.observer.send(|| Change::Appended {
                path: seen.path.to_owned(),
                before: seen.before,
                tail: seen.tail,
            });
        }
    }
}

/// What the observer reports of a checked write, kept before the write goes to the engine.
#[derive(Clone, Copy)]
struct Seen<'a> {
    path: &'a str,
    before: u64,
    chunks: &'a [StreamChunk],
    tail: u64,
}

impl<'a> Seen<'a> {
    fn of(write: &CheckedWrite<'a>) -> Self {
        Seen {
            path: write.path,
            before: write.expected_tail,
            chunks: write.chunks,
            tail: write.meta.tail,
        }
    }
}

#[async_trait]
impl StreamStore for ObservedStore {
    async fn stream_meta(&self, path: &str) -> Result<Option<StreamMeta>> {
        self.inner.stream_meta(path).await
    }

    async fn create_stream_with_producers(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        producers: ProducerUpdate,
        durability: Durability,
    ) -> Result<bool> {
        let made = self
            .inner
            .create_stream_with_producers(meta, chunks, producers, durability)
            .await?;
        if made {
            self.created(meta, chunks);
        }
        Ok(made)
    }

    async fn create_fork(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        source: &ForkSource,
        durability: Durability,
    ) -> Result<bool> {
        let made = self
            .inner
            .create_fork(meta, chunks, source, durability)
            .await?;
        if made {
            self.created(meta, chunks);
        }
        Ok(made)
    }

    async fn delete_fork(
        &self,
        path: &str,
        source: &ForkSource,
        durability: Durability,
    ) -> Result<bool> {
        let existed = self.inner.delete_fork(path, source, durability).await?;
        if existed {
            self.observer.send(|| Change::Deleted {
                path: path.to_owned(),
            });
        }
        Ok(existed)
    }

    async fn stream_producer(&self, path: &str, id: &str) -> Result<Option<ProducerRecord>> {
        self.inner.stream_producer(path, id).await
    }

    async fn list_stream_producers(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProducerRecord>> {
        self.inner.list_stream_producers(path, after, limit).await
    }

    async fn commit_enqueue(
        &self,
        path: &str,
        expected_tail: u64,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
        durability: Durability,
    ) -> Result<CommitTicket> {
        let appended = (!chunks.is_empty()).then(|| Change::Appended {
            path: path.to_owned(),
            before: expected_tail,
            tail: meta.tail,
        });
        let ticket = self
            .inner
            .commit_enqueue(path, expected_tail, chunks, meta, producers, durability)
            .await?;
        let observer = self.observer.clone();
        Ok(Box::pin(async move {
            let result = ticket.await?;
            if let (Commit::Written, Some(change)) = (result, appended) {
                observer.send(|| change);
            }
            Ok(result)
        }))
    }

    async fn commit_checked(&self, write: CheckedWrite<'_>) -> Result<Commit> {
        let seen = Seen::of(&write);
        let result = self.inner.commit_checked(write).await?;
        self.committed(result == Commit::Written, seen);
        Ok(result)
    }

    async fn commit_checked_or_current(&self, write: CheckedWrite<'_>) -> Result<CheckedCommit> {
        let seen = Seen::of(&write);
        let result = self.inner.commit_checked_or_current(write).await?;
        self.committed(result == CheckedCommit::Written, seen);
        Ok(result)
    }

    async fn append_checked(
        &self,
        write: CheckedWrite<'_>,
        before: &[ProducerBefore],
    ) -> Result<Appended> {
        let seen = Seen::of(&write);
        let result = self.inner.append_checked(write, before).await?;
        if let Appended::Written { start } = result {
            // A moved append lands where the engine says, its length unchanged.
            let tail = seen.tail.saturating_sub(seen.before).saturating_add(start);
            let moved = Seen {
                before: start,
                tail,
                ..seen
            };
            self.committed(true, moved);
        }
        Ok(result)
    }

    async fn read_chunks(
        &self,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StreamChunk>> {
        self.inner.read_chunks(path, from, max_bytes).await
    }

    async fn delete_stream(&self, path: &str, durability: Durability) -> Result<bool> {
        let existed = self.inner.delete_stream(path, durability).await?;
        if existed {
            self.observer.send(|| Change::Deleted {
                path: path.to_owned(),
            });
        }
        Ok(existed)
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.inner.list_streams(prefix, after, limit).await
    }

    async fn expired_streams(&self, now: Millis, limit: usize) -> Result<Vec<String>> {
        self.inner.expired_streams(now, limit).await
    }

    async fn segments(&self, path: &str) -> Result<Vec<SegmentRef>> {
        self.inner.segments(path).await
    }

    async fn seal_segment(
        &self,
        path: &str,
        segment: &SegmentRef,
        durability: Durability,
    ) -> Result<bool> {
        self.inner.seal_segment(path, segment, durability).await
    }

    async fn trim_stream(
        &self,
        path: &str,
        before: u64,
        max_chunks: usize,
        expected_state: Option<&[u8]>,
        durability: Durability,
    ) -> Result<Option<sessiond_store::Trimmed>> {
        self.inner
            .trim_stream(path, before, max_chunks, expected_state, durability)
            .await
    }

    async fn drop_chunks(&self, path: &str, offsets: &[u64], d: Durability) -> Result<bool> {
        self.inner.drop_chunks(path, offsets, d).await
    }
}
