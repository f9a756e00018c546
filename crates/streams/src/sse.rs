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
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sessiond_store::now_ms;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{StreamError, StreamResult};
use crate::live::{refresh, Slot};
use crate::offset;
use crate::protocol::{SSE_ENCODING, START_OFFSET};
use crate::service::{Snapshot, Streams};

struct Session {
    streams: Streams,
    snap: Snapshot,
    changes: watch::Receiver<u64>,
    pos: u64,
    cursor: Option<String>,
    base64: bool,
    sent_any: bool,
    done: bool,
    deadline: Instant,
    _slot: Slot,
}

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
    let session = Session {
        streams: streams.clone(),
        deadline: Instant::now() + Duration::from_secs(streams.config.sse_reconnect_s),
        snap,
        changes,
        pos: from,
        cursor,
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
        Some((Ok::<Bytes, Infallible>(Bytes::from(bytes)), s))
    })
}

impl Session {
    /// The next batch of event bytes, or `None` to end the response.
    async fn next_events(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let keepalive = Duration::from_millis(self.streams.config.long_poll_timeout_ms);
        loop {
            // Draining: stop between pages too (a long catch-up must not hold the shutdown).
            if self.sent_any && self.streams.draining.is_cancelled() {
                return Some(self.last_control());
            }
            if self.pos < self.snap.tail {
                let max = self.streams.config.max_read_chunk_bytes;
                // Boxed, like the refresh below: a read's state machine is large and lives
                // only while it runs; inline, every subscriber parked at the tail would carry it.
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
                self.pos = next;
                self.sent_any = true;
                let mut out = data_event(&payload, self.base64);
                out.extend(self.control());
                return Some(out);
            }
            if self.snap.closed || !self.sent_any {
                self.sent_any = true;
                return Some(self.control());
            }
            if Instant::now() >= self.deadline {
                return None;
            }
            if self.streams.draining.is_cancelled() {
                return Some(self.last_control());
            }
            let wake = Instant::now() + keepalive;
            let changed = tokio::select! {
                _ = self.streams.draining.cancelled() => return Some(self.last_control()),
                changed = tokio::time::timeout_at(wake.min(self.deadline), self.changes.changed()) => changed,
            };
            match changed {
                Err(_) if Instant::now() >= self.deadline => return None,
                Err(_) => return Some(self.control()),
                // A plain append published its tail: no lock needed (see `recent.rs`).
                Ok(_) if self.snap.advance() => {}
                Ok(_) => match Box::pin(refresh(&self.streams, &self.snap.path)).await {
                    Ok((snap, changes)) => (self.snap, self.changes) = (snap, changes),
                    Err(_) => return None,
                },
            }
        }
    }

    /// The control event that ends the response at server shutdown: the offset and cursor to
    /// resume from, then EOF.
    fn last_control(&mut self) -> Vec<u8> {
        self.done = true;
        self.control()
    }

    /// A control event for the current position; marks the session done after closure.
    fn control(&mut self) -> Vec<u8> {
        let at_end = self.pos >= self.snap.tail;
        let mut c = Map::new();
        c.insert("streamNextOffset".into(), json!(offset::format(self.pos)));
        if at_end && self.snap.closed {
            c.insert("streamClosed".into(), Value::Bool(true));
            c.insert("upToDate".into(), Value::Bool(true));
            self.done = true;
        } else {
            let cursor = crate::cursor::next(now_ms(), self.cursor.as_deref());
            self.cursor = Some(cursor.clone());
            c.insert("streamCursor".into(), Value::String(cursor));
            if at_end {
                c.insert("upToDate".into(), Value::Bool(true));
            }
        }
        let mut out = b"event: control\ndata:".to_vec();
        out.extend(Value::Object(c).to_string().into_bytes());
        out.extend(b"\n\n");
        out
    }
}

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
    /// (2,808 B with them inline in a debug build, 720 B without).
    #[test]
    fn the_parked_sse_stream_stays_small() {
        fn returned_size<A, R>(_: fn(A) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let size = returned_size(super::events);
        assert!(size <= 800, "the SSE stream state is {size} B");
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
