//! `GET /v1/stream/<path>`: catch-up reads, and the dispatch to long-poll and SSE.
//!
//! A read takes the stream's lock only to check it, refresh its sliding TTL and take a
//! snapshot; the chunks are read afterwards without the lock. Pages are bounded by
//! `max_read_chunk_bytes`; `Stream-Up-To-Date` and `Stream-Closed` are sent only on the page
//! that reaches the tail, so a client never stops early on a partial page.
//!
//! The ETag is `"<incarnation>:<from>:<next>"` plus `:c` once the stream is closed and the
//! page reaches the end, so a cached "up to date" page is revalidated when closure happens,
//! and `:g<n>` once keyed compaction ran (its generation), so a 304 never confirms a page
//! from before a compaction.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_store::now_ms;

use crate::error::{StreamError, StreamResult};
use crate::offset::{self, Offset};
use crate::pages::{page_response, Page};
use crate::service::Streams;

/// How the client wants to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// Catch-up only.
    No,
    /// Wait at the tail.
    LongPoll,
    /// Server-sent events.
    Sse,
}

/// Parsed query parameters of a GET.
pub struct ReadQuery {
    pub offset: Option<Offset>,
    pub live: Live,
    pub cursor: Option<String>,
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits exactly: `from_str_radix` alone would take a sign (`%+1`).
                let hex = s
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses the raw query string strictly for `offset` (once, well-formed) and `live`.
pub fn parse_query(raw: Option<&str>) -> StreamResult<ReadQuery> {
    let mut q = ReadQuery {
        offset: None,
        live: Live::No,
        cursor: None,
    };
    let mut seen_offset = false;
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            decode(value).ok_or_else(|| StreamError::bad_request("malformed query string"))?;
        match key {
            "offset" => {
                if seen_offset {
                    return Err(StreamError::bad_request("offset given more than once"));
                }
                seen_offset = true;
                q.offset = Some(offset::parse(&value).ok_or_else(|| {
                    StreamError::bad_request(
                        "offset must be -1, now, or an offset this server returned",
                    )
                })?);
            }
            "live" => {
                q.live = match value.as_str() {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    _ => return Err(StreamError::bad_request("live must be long-poll or sse")),
                }
            }
            "cursor" => q.cursor = Some(value),
            _ => {}
        }
    }
    Ok(q)
}

/// Handles a GET.
pub async fn read(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    raw_query: Option<&str>,
) -> StreamResult<Response> {
    let q = parse_query(raw_query)?;
    if q.live != Live::No && q.offset.is_none() {
        return Err(StreamError::bad_request("live reads need an offset"));
    }
    let now = now_ms();
    let mut g = streams.lock_live(path, now).await?;
    streams.touch(&mut g, now).await?;
    let Some((snap, changes)) = Streams::snapshot(&g) else {
        return Err(StreamError::not_found());
    };
    drop(g);
    let from = match q.offset.unwrap_or(Offset::Start) {
        Offset::Start => snap.retained,
        Offset::Now => snap.tail,
        Offset::At(p) if p < snap.retained || (p > snap.retained && p < snap.purged) => {
            return Err(StreamError::offset_gone(snap.retained))
        }
        Offset::At(p) => p,
    };
    match q.live {
        Live::LongPoll => crate::live::long_poll(streams, snap, changes, from, q.cursor).await,
        Live::Sse => crate::sse::open(streams, snap, changes, from, q.cursor),
        Live::No if q.offset == Some(Offset::Now) => {
            let page = Page {
                pieces: Vec::new(),
                next: snap.tail,
                messages: 0,
            };
            let mut r = page_response(&snap, 0, &page, false)?;
            r.headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-store"));
            r.headers_mut().remove("etag");
            Ok(r)
        }
        Live::No => {
            let page = streams
                .read_page(&snap, from, streams.config.max_read_chunk_bytes)
                .await?;
            let r = page_response(&snap, from, &page, true)?;
            let etag = r.headers().get("etag").cloned();
            if let (Some(etag), Some(inm)) = (etag, h.get("if-none-match")) {
                if inm
                    .as_bytes()
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii() == etag.as_bytes() || t.trim_ascii() == b"*")
                {
                    let mut r304 = StatusCode::NOT_MODIFIED.into_response();
                    r304.headers_mut().insert("etag", etag);
                    return Ok(r304);
                }
            }
            Ok(r)
        }
    }
}
