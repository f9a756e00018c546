//! `GET …?live=sse`: Server-Sent Events.
//!
//! Each page becomes one `data` event followed immediately by a `control` event (the
//! protocol requires a control after every data event, so a client always knows the offset
//! to resume from). JSON pages are one JSON array per event; text types are sent as UTF-8;
//! every other type is base64 (`Stream-SSE-Data-Encoding: base64`). Payload line breaks (CRLF,
//! CR, LF) each start a new `data:` line, so stored bytes can never inject an event.
//!
//! At the tail the connection waits on the stream's change channel (woken only after durable
//! writes), sending a keep-alive control every `long_poll_timeout_ms`; it ends after the
//! `streamClosed` control, when the stream disappears, or after `sse_reconnect_s` (clients
//! reconnect from their last offset, which lets CDNs collapse connections). Server shutdown
//! ends it the same way, at once: one last control event with the offset, then EOF.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use sessiond_store::now_ms;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::error::{StreamError, StreamResult};
use crate::live::{refresh, Slot};
use crate::offset;
use crate::protocol::{SSE_ENCODING, START_OFFSET};
use crate::recent::{Event, EventKey};
use crate::service::{Snapshot, Streams};

struct Session {
    streams: Streams,
    snap: Snapshot,
    changes: watch::Receiver<u64>,
    pos: u64,
    /// The last cursor sent (or the client's, parsed, before the first control event).
    cursor: Option<u64>,
    /// A control event to send right after the data event just returned (large events only).
    pending: Option<Bytes>,
    base64: bool,
    sent_any: bool,
    done: bool,
    deadline: Instant,
    /// The keep-alive timer, kept registered across events: moving a registered timer's
    /// deadline later is a lock-free update, registering a new one per event was not.
    keepalive: Pin<Box<Sleep>>,
    /// When the keep-alive timer fires (`None` once it has fired), kept here so that a wait
    /// does not read the boxed timer (`wait_for_change`).
    keepalive_at: Option<Instant>,
    _slot: Slot,
}

/// How a wait at the tail ended (`Session::wait_for_change`).
enum Waited {
    /// The stream changed (or its sender is gone): look again.
    Changed,
    /// A keep-alive of quiet: this control event goes out.
    KeepAlive(Bytes),
    /// The reconnect deadline: the response ends.
    Deadline,
}

/// Data events up to this size are sent with their control event in one body frame (copied
/// once); larger ones as two frames, so a large page is never copied per subscriber.
const JOIN_BELOW: usize = 4096;

/// True for content types sent as text.
fn is_text(snap: &Snapshot) -> bool {
    let media = crate::state::media_type(&snap.content_type);
    snap.json || media.starts_with("text/")
}

/// Opens an SSE response reading from `from`.
pub fn open(
    streams: &Streams,
    snap: Snapshot,
    changes: watch::Receiver<u64>,
    from: u64,
    cursor: Option<String>,
) -> StreamResult<Response> {
    let Some(slot) = Slot::take(&streams.sse_open, streams.config.max_sse_connections, "sse")
    else {
        return Err(StreamError::busy("too many open SSE connections"));
    };
    let base64 = !is_text(&snap);
    let start = HeaderValue::from_str(&offset::format(snap.retained));
    let deadline = Instant::now() + Duration::from_secs(streams.config.sse_reconnect_s);
    let session = Session {
        streams: streams.clone(),
        deadline,
        keepalive: Box::pin(tokio::time::sleep_until(deadline)),
        keepalive_at: Some(deadline),
        snap,
        changes,
        pos: from,
        cursor: cursor.as_deref().and_then(crate::cursor::parse),
        pending: None,
        base64,
        sent_any: false,
        done: false,
        _slot: slot,
    };
    let mut r = Response::new(Body::from_stream(events(session)));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if base64 {
        h.insert(SSE_ENCODING, HeaderValue::from_static("base64"));
    }
    if let Ok(start) = start {
        h.insert(START_OFFSET, start);
    }
    Ok(r)
}

/// The response body's stream: one item per batch of events.
fn events(session: Session) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(session, |mut s| async move {
        let bytes = s.next_events().await?;
        Some((Ok::<Bytes, Infallible>(bytes), s))
    })
}

impl Session {
    /// The next batch of event bytes, or `None` to end the response.
    async fn next_events(&mut self) -> Option<Bytes> {
        if let Some(control) = self.pending.take() {
            return Some(control);
        }
        if self.done {
            return None;
        }
        let keepalive = Duration::from_millis(self.streams.config.long_poll_timeout_ms);
        loop {
            // Draining: stop between pages too (a long catch-up must not hold the shutdown).
            if self.sent_any && self.streams.draining.is_draining() {
                return Some(self.last_control());
            }
            if self.pos < self.snap.tail {
                let event = match self.kept_event() {
                    Some(event) => event,
                    None => self.encode_page().await?,
                };
                self.pos = event.next;
                self.sent_any = true;
                return Some(self.with_control(event.bytes));
            }
            if self.snap.closed || !self.sent_any {
                self.sent_any = true;
                return Some(self.control_event());
            }
            if Instant::now() >= self.deadline {
                return None;
            }
            if self.streams.draining.is_draining() {
                return Some(self.last_control());
            }
            // Server shutdown wakes every reader through its change channel
            // (`Streams::with_shutdown`), checked above: no wait on the shutdown token here,
            // which every delivery would register and drop again.
            match self.wait_for_change(keepalive).await {
                Waited::Changed => {}
                Waited::KeepAlive(control) => return Some(control),
                Waited::Deadline => return None,
            }
            // A plain append published its tail: no lock needed (see `recent.rs`).
            if !self.snap.advance() {
                match Box::pin(refresh(&self.streams, &self.snap.path)).await {
                    Ok((snap, changes)) => (self.snap, self.changes) = (snap, changes),
                    Err(_) => return None,
                }
            }
        }
    }

    /// Waits at the tail for the stream to change, for `keepalive` without one (a keep-alive
    /// control event to send), or for the response's reconnect deadline.
    ///
    /// The keep-alive counts from now, but the timer is not moved to now + `keepalive` on
    /// every wait (a timer-wheel update per delivery, 2 % of the server's CPU with 1,000
    /// subscribers): a timer that is still pending is left as it is, and when it fires
    /// before a whole `keepalive` of quiet it is moved once to where the quiet ends.
    async fn wait_for_change(&mut self, keepalive: Duration) -> Waited {
        let quiet_until = (Instant::now() + keepalive).min(self.deadline);
        if self.keepalive_at.is_none_or(|at| at > quiet_until) {
            self.keepalive.as_mut().reset(quiet_until);
            self.keepalive_at = Some(quiet_until);
        }
        loop {
            tokio::select! {
                biased;
                // Also when the sender is gone (its object evicted): the refresh re-subscribes.
                _ = self.changes.changed() => return Waited::Changed,
                () = self.keepalive.as_mut() => {
                    self.keepalive_at = None;
                    let now = Instant::now();
                    if now >= self.deadline {
                        return Waited::Deadline;
                    }
                    if now < quiet_until {
                        self.keepalive.as_mut().reset(quiet_until);
                        self.keepalive_at = Some(quiet_until);
                        continue;
                    }
                    return Waited::KeepAlive(self.control_event());
                }
            }
        }
    }

    /// What identifies the data event of the page from the current position.
    fn event_key(&self) -> EventKey {
        EventKey {
            created_at: self.snap.created_at,
            epoch: self.snap.epoch,
            from: self.pos,
            tail: self.snap.tail,
        }
    }

    /// The data event another subscriber encoded for the same page, if it is kept. Not for
    /// a position a trim or compaction made unreadable (`read_page` answers those).
    fn kept_event(&self) -> Option<Event> {
        let (from, snap) = (self.pos, &self.snap);
        if from < snap.retained || (from > snap.retained && from < snap.purged) {
            return None;
        }
        snap.recent.event(&self.event_key())
    }

    /// Reads the page from the current position and encodes its data event (kept for the
    /// other subscribers woken by the same append); `None` ends the response.
    async fn encode_page(&self) -> Option<Event> {
        let max = self.streams.config.max_read_chunk_bytes;
        // Boxed, like the refresh: a read's state machine is large and lives only while it
        // runs; inline, every subscriber parked at the tail would carry it.
        let page = Box::pin(self.streams.read_page(&self.snap, self.pos, max))
            .await
            .ok()?;
        if page.next <= self.pos {
            return None;
        }
        let mut payload = crate::pages::body(&self.snap, &page);
        let mut next = page.next;
        if !self.base64 && !self.snap.json {
            // A page cut by size may end inside a UTF-8 character: send the complete
            // characters now and the rest with the next page.
            let complete = utf8_prefix(&payload);
            if complete > 0 && complete < payload.len() {
                next -= (payload.len() - complete) as u64;
                payload.truncate(complete);
            }
        }
        let event = Event {
            next,
            bytes: Bytes::from(data_event(&payload, self.base64)),
        };
        let budget = self.streams.config.fanout_cache_bytes;
        self.snap
            .recent
            .keep_event(self.event_key(), &event, budget);
        Some(event)
    }

    /// `data` followed by the control event for the current position: one frame when small,
    /// else `data` now and the control event next.
    fn with_control(&mut self, data: Bytes) -> Bytes {
        if data.len() >= JOIN_BELOW {
            self.pending = Some(self.control_event());
            return data;
        }
        let mut out = Vec::with_capacity(data.len() + CONTROL_ROOM);
        out.extend_from_slice(&data);
        self.push_control(&mut out);
        Bytes::from(out)
    }

    /// The control event that ends the response at server shutdown: the offset and cursor to
    /// resume from, then EOF.
    fn last_control(&mut self) -> Bytes {
        self.done = true;
        self.control_event()
    }

    fn control_event(&mut self) -> Bytes {
        let mut out = Vec::with_capacity(CONTROL_ROOM);
        self.push_control(&mut out);
        Bytes::from(out)
    }

    /// Appends a control event for the current position; marks the session done after
    /// closure. Written by hand (every delivery sends one): the offset token and the cursor
    /// are digits and `_`, nothing to escape.
    fn push_control(&mut self, out: &mut Vec<u8>) {
        let at_end = self.pos >= self.snap.tail;
        out.extend_from_slice(b"event: control\ndata:{\"streamNextOffset\":\"");
        offset::push(self.pos, out);
        out.push(b'"');
        if at_end && self.snap.closed {
            out.extend_from_slice(b",\"streamClosed\":true");
            self.done = true;
        } else {
            let cursor = crate::cursor::next_value(now_ms(), self.cursor);
            self.cursor = Some(cursor);
            out.extend_from_slice(b",\"streamCursor\":\"");
            out.extend_from_slice(itoa::Buffer::new().format(cursor).as_bytes());
            out.push(b'"');
        }
        if at_end {
            out.extend_from_slice(b",\"upToDate\":true");
        }
        out.extend_from_slice(b"}\n\n");
    }
}

/// Room for a control event: the fixed text, a 33-character offset and a 20-digit cursor.
const CONTROL_ROOM: usize = 128;

/// Length of the longest prefix that does not end inside a UTF-8 sequence.
fn utf8_prefix(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    }
}

/// `event: data` with one `data:` line per payload line.
fn data_event(payload: &[u8], base64: bool) -> Vec<u8> {
    let text = if base64 {
        base64::engine::general_purpose::STANDARD.encode(payload)
    } else {
        String::from_utf8_lossy(payload).into_owned()
    };
    // Most pages hold no CR: no copy of the page for them (measured in docs/architecture.md).
    let normalized = if text.contains('\r') {
        std::borrow::Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(text.as_str())
    };
    // The event, a `data:` per line and room for the control event that follows.
    let mut out = Vec::with_capacity(normalized.len() + 256);
    out.extend(b"event: data\n");
    for line in normalized.split('\n') {
        // `data:` then the line; a line that starts with a space gets one extra space, which
        // the client's parser strips (it removes exactly one), so the payload is preserved.
        out.extend(if line.starts_with(' ') {
            &b"data: "[..]
        } else {
            &b"data:"[..]
        });
        out.extend(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    /// What every open SSE response keeps parked between events (boxed by the body): the
    /// session and the wait at the tail. A page read and a refresh are boxed while they run
    /// (2,808 B with them inline in a debug build, 720 B without); the keep-alive timer is
    /// boxed for the response's life and the wait no longer holds a shutdown waiter (576 B).
    #[test]
    fn the_parked_sse_stream_stays_small() {
        fn returned_size<A, R>(_: fn(A) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let size = returned_size(super::events);
        assert!(size <= 640, "the SSE stream state is {size} B");
    }

    #[test]
    fn utf8_cut_keeps_whole_characters() {
        let s = "aé".as_bytes();
        assert_eq!(super::utf8_prefix(&s[..2]), 1);
        assert_eq!(super::utf8_prefix(s), 3);
    }

    #[test]
    fn line_breaks_start_new_data_lines() {
        let e = super::data_event(b"a\r\nb\rc\nd", false);
        assert_eq!(e, b"event: data\ndata:a\ndata:b\ndata:c\ndata:d\n\n");
        let e = super::data_event(b" x", false);
        assert_eq!(e, b"event: data\ndata:  x\n\n");
        let e = super::data_event(b"", true);
        assert_eq!(e, b"event: data\ndata:\n\n");
    }
}
