//! Retention policies: how much history a stream keeps, and the sweeper's pass that enforces
//! them with [`crate::trim`].
//!
//! A policy is per stream (`Stream-Retention-Max-Age` / `Stream-Retention-Max-Bytes` on the
//! creating PUT) or, for streams created without one, the configured default of the longest
//! matching path prefix (`[[streams.retention]]`). The default is looked up at every pass, not
//! copied at creation, so a config change applies to existing streams at the next restart.
//!
//! Why time marks: chunks carry no timestamps (adding one to every chunk would cost every
//! append), so a stream remembers a few `(time, offset)` marks in its metadata: the offset of
//! an append's first byte, at most one per `retention_mark_interval_s`. Everything below a
//! mark's offset was appended before its time, so an age cut may drop up to the newest mark
//! older than the cut — at most one interval later than exact, never earlier. The list is
//! bounded ([`MAX_MARKS`]: when full, every other mark goes, halving its resolution).
//!
//! The policy itself ([`Retention`]) is part of what a stream stores, so it is defined in
//! `state.rs`, and the configured defaults in `config.rs`; reading, choosing and enforcing a
//! policy, which needs the service, is here.

use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use sessiond_http::RawBody;
use sessiond_store::Millis;

use crate::config::RetentionDefault;
use crate::error::{StreamError, StreamResult};
use crate::headers;
use crate::protocol::{PATCH_PREFIX, RETENTION_MAX_AGE, RETENTION_MAX_BYTES};
use crate::service::{Snapshot, Streams};
use crate::state::{Retention, StreamInfo};

/// Most time marks a stream keeps.
pub const MAX_MARKS: usize = 256;

impl Retention {
    /// The retention headers of a PUT (positive integers, plain digits).
    pub fn from_headers(h: &HeaderMap) -> StreamResult<Retention> {
        let number = |name: &str| -> StreamResult<Option<u64>> {
            let Some(v) = headers::get(h, name)? else {
                return Ok(None);
            };
            let v = v.trim();
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0 && v.bytes().all(|b| b.is_ascii_digit()))
                .map(Some)
                .ok_or_else(|| {
                    StreamError::bad_request(format!("{name} must be a positive integer"))
                })
        };
        Ok(Retention {
            max_age_s: number(RETENTION_MAX_AGE)?,
            max_bytes: number(RETENTION_MAX_BYTES)?,
        })
    }
}

/// The policy that applies to `path`: its own, else the longest matching configured default.
pub fn effective(defaults: &[RetentionDefault], path: &str, info: &StreamInfo) -> Retention {
    if !info.retention.is_empty() {
        return info.retention.clone();
    }
    defaults
        .iter()
        .filter(|d| path.starts_with(&d.prefix))
        .max_by_key(|d| d.prefix.len())
        .map(|d| Retention {
            max_age_s: d.max_age_s,
            max_bytes: d.max_bytes,
        })
        .unwrap_or_default()
}

/// Records that data from `offset` on was appended at `now`, unless the newest mark is younger
/// than `interval_ms`.
pub fn mark(info: &mut StreamInfo, now: Millis, offset: u64, interval_ms: i64) {
    if info
        .marks
        .last()
        .is_some_and(|(at, _)| now.saturating_sub(*at) < interval_ms)
    {
        return;
    }
    if info.marks.len() >= MAX_MARKS {
        let mut i = 0;
        info.marks.retain(|_| {
            i += 1;
            i % 2 == 0
        });
    }
    info.marks.push((now, offset));
}

/// Where `policy` wants the stream of `snap` to start at `now` (never lower than its start).
pub async fn target(
    streams: &Streams,
    snap: &Snapshot,
    info: &StreamInfo,
    policy: &Retention,
    now: Millis,
) -> StreamResult<u64> {
    let mut cut = snap.retained;
    if let Some(age) = policy.max_age_s {
        let oldest = now.saturating_sub((age as i64).saturating_mul(1000));
        if let Some((_, offset)) = info.marks.iter().rev().find(|(at, _)| *at <= oldest) {
            cut = cut.max(*offset);
        }
    }
    if let Some(bytes) = policy.max_bytes {
        let want = snap.tail.saturating_sub(bytes);
        if want > cut {
            cut = streams.boundary_at_or_after(snap, want).await?;
        }
    }
    Ok(cut.min(snap.tail))
}

/// `PATCH /v1/streams/<name>` with a JSON object: `max_age_s` / `max_bytes` set to a positive
/// integer, or `null` to remove that limit (the configured default then applies when both are
/// gone); an absent field is unchanged. 200 with the stream's own policy. Needs a write
/// credential for the stream (the access guard decides, as for a POST to it).
pub async fn patch(
    State(streams): State<Streams>,
    OriginalUri(uri): OriginalUri,
    body: Result<RawBody, sessiond_http::ApiError>,
) -> Response {
    let result = match body {
        Ok(RawBody(body)) => patch_policy(&streams, uri.path(), &body).await,
        Err(e) => Err(StreamError::from(e)),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn patch_policy(streams: &Streams, path: &str, body: &[u8]) -> StreamResult<Response> {
    let rest = path.strip_prefix(PATCH_PREFIX).unwrap_or_default();
    let full = format!("{}{rest}", crate::protocol::STREAM_PREFIX);
    let name = crate::headers::stream_name(&full, streams.config.max_name_bytes)?;
    let changes: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| StreamError::bad_request(format!("body must be a JSON object: {e}")))?;
    let field = |key: &str| -> StreamResult<Option<Option<u64>>> {
        match changes.get(key) {
            None => Ok(None),
            Some(serde_json::Value::Null) => Ok(Some(None)),
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| Some(Some(n)))
                .ok_or_else(|| {
                    StreamError::bad_request(format!("{key} must be a positive integer or null"))
                }),
        }
    };
    if let Some(other) = changes
        .keys()
        .find(|k| *k != "max_age_s" && *k != "max_bytes")
    {
        return Err(StreamError::bad_request(format!("unknown field {other}")));
    }
    let (age, bytes) = (field("max_age_s")?, field("max_bytes")?);
    let policy = streams
        .retry_stale(|| async {
            let now = sessiond_store::now_ms();
            let mut g = streams.lock_live(name, now).await?;
            streams.settle(&mut g).await?;
            let Some(s) = crate::service::stream(&g) else {
                return Err(StreamError::not_found());
            };
            let (tail, mut info) = (s.tail, s.info.clone());
            if let Some(age) = age {
                info.retention.max_age_s = age;
            }
            if let Some(bytes) = bytes {
                info.retention.max_bytes = bytes;
            }
            let policy = info.retention.clone();
            streams.commit(&mut g, tail, &[], info, false).await?;
            Ok(policy)
        })
        .await?;
    Ok(axum::Json(policy).into_response())
}
