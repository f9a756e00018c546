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

/// A query value: `+` is a space and `%XY` a byte (decoded by `percent-encoding`), and the
/// result must be UTF-8. Stricter than the crate, which keeps a `%` that does not start an
/// escape as a literal: here every `%` must be followed by exactly two hex digits (a sign is
/// no digit: `%+1` is malformed), so a client's encoding bug is a 400, not a different cursor.
fn decode(s: &str) -> Option<String> {
    let escapes = s.match_indices('%').all(|(i, _)| {
        s.as_bytes()
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes {
        return None;
    }
    let spaced = s.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()?;
    Some(decoded.into_owned())
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
