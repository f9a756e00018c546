//! `HEAD /v1/stream/<path>`: the stream's metadata without a body.
//!
//! HEAD never refreshes the sliding TTL (the protocol says only reads and writes do), and is
//! `Cache-Control: no-store` (set by the common-headers middleware) because it describes the
//! moving tail.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_store::now_ms;

use crate::error::{StreamError, StreamResult};
use crate::offset;
use crate::protocol::{CLOSED, EXPIRES_AT, NEXT_OFFSET, START_OFFSET, TTL};
use crate::service::{stream, Streams};

/// Handles a HEAD.
pub async fn head(streams: &Streams, path: &str) -> StreamResult<Response> {
    let g = streams.lock_live(path, now_ms()).await?;
    let (Some(s), Some(tail)) = (stream(&g), g.state().and_then(|o| o.visible_tail())) else {
        return Err(StreamError::not_found());
    };
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("content-type", s.info.content_type.clone());
    put(NEXT_OFFSET, offset::format(tail));
    put(START_OFFSET, offset::format(s.retained));
    if let Some(ttl) = s.info.ttl_s {
        put(TTL, ttl.to_string());
    }
    if let Some(at) = s.info.expires_at.filter(|_| s.info.ttl_s.is_none()) {
        put(EXPIRES_AT, crate::time::format_rfc3339(at));
    }
    if s.info.closed {
        put(CLOSED, "true".into());
    }
    if s.info.compaction.is_some() {
        put(crate::protocol::COMPACTION, "key".into());
    }
    put(
        "etag",
        format!(
            "\"{}:head:{}{}\"",
            s.info.created_at,
            tail,
            if s.info.closed { ":c" } else { "" }
        ),
    );
    Ok(r)
}
