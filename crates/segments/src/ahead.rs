//! Read-ahead for catch-up readers: the next page's bytes are fetched while this page is sent.
//!
//! Why: a catch-up reader asks for one page at a time and waits for all of it before asking for
//! the next, and a cold page is read (and its frames verified) before its first byte is sent.
//! So the reader waits for every read, and the server waits for every request. When a read
//! filled a whole page, the range the same reader will most likely ask for next (the frames
//! from where a full binary page ends, as many bytes again) is fetched in the background; the
//! next request takes it instead of reading, or waits for the read in flight.
//!
//! What it must not change: bytes served are only those a request would have read itself,
//! verified by the caller as before (an object is immutable and its key carries a nonce, so a
//! range read ahead is the same bytes as a range read now), and a failed read ahead is simply
//! forgotten: the request reads itself and gets the error it would have got. A prediction can
//! miss (JSON pages end between messages, a reader may stop): then the bytes were read for
//! nothing, and that stream gets no read-ahead for [`UNCLAIMED`] (a JSON stream whose pages
//! end early costs at most one wasted read a second). Memory: at most the tier's read cache
//! budget of ranges held or in flight; when that is taken, no new read starts (so many readers
//! never evict each other's ranges unread), and a range nobody took for [`UNCLAIMED`] is
//! dropped. A request that is dropped while it runs the read itself leaves nothing behind.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OnceCell;

/// A range read ahead that no request took within this long is dropped.
const UNCLAIMED: Duration = Duration::from_secs(1);

type Fetch = std::pin::Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

/// A read ahead: run by the background task, or by the request if it comes first. Its result
/// is `None` when it failed (the request then reads itself).
struct Pending {
    fetch: Mutex<Option<Fetch>>,
    result: OnceCell<Option<Bytes>>,
}

impl Pending {
    async fn bytes(&self) -> Option<Bytes> {
        let run = || async {
            let fetch = self
                .fetch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match fetch {
                Some(fetch) => fetch.await,
                None => None,
            }
        };
        self.result.get_or_init(run).await.clone()
    }
}

type Fetched = Arc<Pending>;

struct Slot {
    stream: String,
    key: String,
    range: Range<u64>,
    started: Instant,
    bytes: Fetched,
}

#[derive(Default)]
struct Inner {
    slots: VecDeque<Slot>,
    held: usize,
    /// Streams whose last read ahead was not what their next read asked for, and when.
    missed: HashMap<String, Instant>,
}

/// Ranges read ahead, within a byte budget.
pub(crate) struct ReadAhead {
    budget: usize,
    inner: Mutex<Inner>,
}

impl ReadAhead {
    pub(crate) fn new(budget: usize) -> ReadAhead {
        ReadAhead {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bytes `range` of object `key`, when a read ahead covers them (waiting for it while
    /// in flight); `None` when there is none, it failed, or it covers other bytes. A read of
    /// `stream` that finds its read-ahead elsewhere marks the stream as missed.
    pub(crate) async fn take(&self, stream: &str, key: &str, range: &Range<u64>) -> Option<Bytes> {
        let slot = {
            let mut inner = self.lock();
            let at = inner.slots.iter().position(|s| s.stream == stream)?;
            let slot = inner.slots.remove(at)?;
            inner.held -= len(&slot.range);
            let covers =
                slot.key == key && slot.range.start <= range.start && range.end <= slot.range.end;
            if !covers {
                inner.missed.insert(stream.to_owned(), Instant::now());
                metrics::counter!("sessiond_streams_cold_read_ahead_total", "outcome" => "missed")
                    .increment(1);
                return None;
            }
            slot
        };
        let bytes = slot.bytes.bytes().await?;
        metrics::counter!("sessiond_streams_cold_read_ahead_total", "outcome" => "used")
            .increment(1);
        let from = usize::try_from(range.start - slot.range.start).ok()?;
        let to = usize::try_from(range.end - slot.range.start).ok()?;
        (to <= bytes.len()).then(|| bytes.slice(from..to))
    }

    /// Starts `fetch` (the bytes `range` of object `key`) in the background as `stream`'s next
    /// page, unless the stream missed one lately, already has one, or the budget is taken.
    pub(crate) fn start<F>(&self, stream: &str, key: &str, range: Range<u64>, fetch: F)
    where
        F: Future<Output = Option<Bytes>> + Send + 'static,
    {
        let size = len(&range);
        let bytes: Fetched = Arc::new(Pending {
            fetch: Mutex::new(Some(Box::pin(fetch))),
            result: OnceCell::new(),
        });
        {
            let mut inner = self.lock();
            inner.missed.retain(|_, at| at.elapsed() <= UNCLAIMED);
            if inner.missed.contains_key(stream) || inner.slots.iter().any(|s| s.stream == stream) {
                return;
            }
            while inner
                .slots
                .front()
                .is_some_and(|s| s.started.elapsed() > UNCLAIMED)
            {
                if let Some(old) = inner.slots.pop_front() {
                    inner.held -= len(&old.range);
                }
            }
            if size == 0 || inner.held.saturating_add(size) > self.budget {
                return;
            }
            inner.held += size;
            inner.slots.push_back(Slot {
                stream: stream.to_owned(),
                key: key.to_owned(),
                range,
                started: Instant::now(),
                bytes: bytes.clone(),
            });
        }
        tokio::spawn(async move {
            bytes.bytes().await;
        });
    }

    /// Forgets a deleted stream.
    pub(crate) fn forget_stream(&self, stream: &str) {
        let mut inner = self.lock();
        inner.missed.remove(stream);
        let mut freed = 0;
        inner.slots.retain(|s| {
            let keep = s.stream != stream;
            if !keep {
                freed += len(&s.range);
            }
            keep
        });
        inner.held -= freed;
    }
}

fn len(range: &Range<u64>) -> usize {
    usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn ready(bytes: &'static [u8]) -> Option<Bytes> {
        Some(Bytes::from_static(bytes))
    }

    #[tokio::test]
    async fn a_read_ahead_serves_the_range_it_covers_once() {
        let ahead = ReadAhead::new(10);
        ahead.start("s", "k", 4..10, ready(b"abcdef"));
        assert_eq!(ahead.take("s", "k", &(5..8)).await.unwrap(), "bcd");
        assert!(ahead.take("s", "k", &(5..8)).await.is_none(), "taken");
        // A failed read ahead is no bytes: the request reads itself.
        ahead.start("s", "k", 0..2, async { None });
        assert!(ahead.take("s", "k", &(0..2)).await.is_none());
        assert_eq!(ahead.lock().held, 0);
    }

    #[tokio::test]
    async fn a_miss_pauses_the_stream_and_the_budget_is_never_exceeded() {
        let ahead = ReadAhead::new(10);
        ahead.start("s", "k", 0..6, ready(b"abcdef"));
        ahead.start("s", "k", 6..8, ready(b"gh"));
        assert_eq!(ahead.lock().slots.len(), 1, "one per stream");
        ahead.start("t", "k2", 0..6, ready(b"abcdef"));
        assert_eq!(ahead.lock().slots.len(), 1, "over budget: not started");
        assert!(
            ahead.take("s", "other", &(0..6)).await.is_none(),
            "another object"
        );
        ahead.start("s", "k", 0..6, ready(b"abcdef"));
        assert!(ahead.lock().slots.is_empty(), "paused after a miss");
        ahead.start("t", "k2", 0..6, ready(b"abcdef"));
        ahead.forget_stream("t");
        assert!(ahead.take("t", "k2", &(0..6)).await.is_none());
        assert_eq!(ahead.lock().held, 0);
        let none = ReadAhead::new(0);
        none.start("s", "k", 0..1, ready(b"a"));
        assert!(none.lock().slots.is_empty());
    }
}
