//! `GET …?live=long-poll`: answer at once when data exists after the offset, otherwise wait
//! for an append (or closure) up to `long_poll_timeout_ms`, then 204. Server shutdown ends the
//! wait early with the same 204 and offset, so a rolling restart never holds a poll open.
//!
//! Waiting uses the stream object's `watch` channel, which writers bump only after their
//! commit returned, so a woken reader always reads durable data. No lock is held while waiting.
//! If the object is evicted meanwhile (its sender dropped), the reader simply re-locks and
//! re-subscribes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_store::now_ms;
use tokio::sync::watch;

use crate::error::{StreamError, StreamResult};
use crate::offset;
use crate::pages::{page_response, with_cursor};
use crate::protocol::{CLOSED, CURSOR, NEXT_OFFSET, UP_TO_DATE};
use crate::service::{Found, Snapshot, Streams};

/// A slot in a bounded pool of connections (`mode` = `sse` | `long_poll`, for metrics),
/// released on drop.
pub struct Slot(Arc<AtomicUsize>, &'static str);

impl Slot {
    /// Takes a slot, or `None` when `max` are in use.
    pub fn take(counter: &Arc<AtomicUsize>, max: usize, mode: &'static str) -> Option<Slot> {
        let previous = counter.fetch_add(1, Ordering::AcqRel);
        if previous >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::rejected(mode);
            return None;
        }
        crate::metrics::live(mode, true);
        Some(Slot(counter.clone(), mode))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::live(self.1, false);
    }
}

/// Re-reads the stream after a wake-up: a new snapshot and receiver, or 404/410.
pub async fn refresh(
    streams: &Streams,
    path: &str,
) -> StreamResult<(Snapshot, watch::Receiver<u64>)> {
    let mut g = streams.lock(path).await?;
    match streams.find(&mut g, now_ms()).await? {
        Found::Live => Streams::snapshot(&g).ok_or_else(StreamError::not_found),
        Found::Missing => Err(StreamError::not_found()),
        Found::Gone => Err(StreamError::gone()),
    }
}

/// Serves a long-poll read from `from`.
pub async fn long_poll(
    streams: &Streams,
    mut snap: Snapshot,
    mut changes: watch::Receiver<u64>,
    from: u64,
    cursor: Option<String>,
) -> StreamResult<Response> {
    let Some(_slot) = Slot::take(
        &streams.long_polls,
        streams.config.max_long_polls,
        "long_poll",
    ) else {
        return Err(StreamError::busy("too many open long-poll requests"));
    };
    let timeout = Duration::from_millis(streams.config.long_poll_timeout_ms);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if from < snap.tail {
            let page = streams
                .read_page(&snap, from, streams.config.max_read_chunk_bytes)
                .await?;
            let r = page_response(&snap, from, &page, true)?;
            return Ok(with_cursor(
                r,
                &crate::cursor::next(now_ms(), cursor.as_deref()),
            ));
        }
        if snap.closed {
            return Ok(at_tail(&snap, true, None));
        }
        // Shutdown answers like the timeout: the client polls again (elsewhere) from the tail.
        let woke = tokio::select! {
            _ = streams.draining.cancelled() => false,
            woke = tokio::time::timeout_at(deadline, changes.changed()) => woke.is_ok(),
        };
        if !woke {
            let c = crate::cursor::next(now_ms(), cursor.as_deref());
            return Ok(at_tail(&snap, false, Some(&c)));
        }
        // A plain append published its tail: no lock needed (see `recent.rs`).
        if !snap.advance() {
            (snap, changes) = refresh(streams, &snap.path).await?;
        }
    }
}

fn at_tail(snap: &Snapshot, closed: bool, cursor: Option<&str>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&offset::format(snap.tail)) {
        h.insert(NEXT_OFFSET, v);
    }
    h.insert(UP_TO_DATE, HeaderValue::from_static("true"));
    if closed {
        h.insert(CLOSED, HeaderValue::from_static("true"));
    }
    if let Some(c) = cursor.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert(CURSOR, c);
    }
    r
}
