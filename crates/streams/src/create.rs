//! `PUT /v1/stream/<path>`: create a stream (201), confirm an identical one (200), or refuse a
//! different one (409).
//!
//! "Identical" compares what the client asked for: media type (case-insensitive, parameters
//! ignored), TTL / Expires-At as requested, closure, and the fork request. A soft-deleted path
//! cannot be reused while forks still read it (409); an expired path is removed lazily and can
//! be recreated at once.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_store::{now_ms, Durability, ForkSource, StreamChunk, StreamMeta};

use crate::error::{StreamError, StreamResult};
use crate::fork::{self, ForkBase, LockedSource};
use crate::headers;
use crate::offset;
use crate::producer::ExpectedEpoch;
use crate::protocol::{CLOSED, NEXT_OFFSET};
use crate::service::{stream, Found, Streams};
use crate::state::{media_type, ProducerState, Stream, StreamInfo, StreamObject};

const DEFAULT_TYPE: &str = "application/octet-stream";

/// What a new stream starts with.
#[derive(Clone)]
enum Initial {
    /// A PUT's body.
    Body(Bytes),
    /// JSON values an in-process producer serialized one by one (see
    /// [`create_with_json_values`]), admitted under the producer of the request's headers.
    Values(Vec<Vec<u8>>, ExpectedEpoch),
}

/// Handles a PUT. `location` is the absolute URL of the stream.
pub async fn create(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    body: Bytes,
    location: &str,
) -> StreamResult<Response> {
    let initial = Initial::Body(body);
    match create_retrying(streams, path, h, initial, location).await? {
        Some(response) => Ok(response),
        // A PUT always answers for an existing stream (200 or 409).
        None => Err(StreamError::conflict("the stream exists")),
    }
}

/// The metadata of a JSON stream the server creates at `path` at `now` with `retention`
/// (open, no TTL, no data): what an engine writes when it creates such a stream itself
/// (routed events, see `Streams::written_outside`).
pub fn server_json_stream(
    path: &str,
    retention: crate::state::Retention,
    now: sessiond_store::Millis,
) -> Result<sessiond_store::StreamMeta, sessiond_store::StoreError> {
    let info = crate::state::StreamInfo::new("application/json".into(), now, retention);
    crate::state::Stream::encode(path, 0, &info)
}

/// Creates the JSON stream `path` holding `values` (each one JSON value, validated and stored
/// byte for byte as by `append::append_json_values`), with the headers `h` of a PUT plus, when
/// it has `Producer-Id`, `Producer-Epoch` and `Producer-Seq: 0`, that producer's row, all in
/// one engine write; `expected` is required of the (absent) row as by
/// `append::append_json_values_expecting`. `None` when the stream exists: nothing was written,
/// append instead.
///
/// Why: a server-side producer whose first append creates the stream (the security relay, a
/// stream per user) otherwise pays a create and an append, two engine writes and a producer
/// read, per new stream.
pub async fn create_with_json_values(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    values: Vec<Vec<u8>>,
    expected: ExpectedEpoch,
) -> StreamResult<Option<Response>> {
    let initial = Initial::Values(values, expected);
    create_retrying(streams, path, h, initial, "/").await
}

async fn create_retrying(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    initial: Initial,
    location: &str,
) -> StreamResult<Option<Response>> {
    // On a shared engine a creation that lost a race with another node wrote nothing.
    streams
        .retry_stale(|| create_once(streams, path, h, initial.clone(), location))
        .await
}

async fn create_once(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    initial: Initial,
    location: &str,
) -> StreamResult<Option<Response>> {
    let now = now_ms();
    let closed = headers::closed_flag(h);
    let durability = headers::durability(h)?;
    let (ttl, expires_at) = headers::expiry(h)?;
    let content_type = headers::get(h, "content-type")?
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let fork_request = fork::parse_request(h, streams.config.max_name_bytes)?;
    let retention = crate::state::Retention::from_headers(h)?;
    let compaction = crate::compaction::from_headers(h, &streams.config.compaction)?;

    let mut g = match initial {
        // A server-side producer creates streams it has not written yet, mostly new ones: no
        // read first, the engine's create refuses an existing path itself (`None` below).
        Initial::Values(..) => streams.objects.lock(path).await,
        Initial::Body(_) => streams.lock(path).await?,
    };
    match streams.find(&mut g, now).await? {
        Found::Gone => {
            return Err(StreamError::conflict(
                "the stream was deleted while forks still use it",
            ))
        }
        Found::Live if matches!(initial, Initial::Values(..)) => return Ok(None),
        Found::Live => {
            streams.settle(&mut g).await?;
            let Some(existing) = stream(&g) else {
                return Err(StreamError::not_found());
            };
            let info = &existing.info;
            let same_type = match content_type {
                Some(ct) => media_type(ct) == info.media_type(),
                None => fork_request.is_some() || info.media_type() == DEFAULT_TYPE,
            };
            let same = same_type
                && info.req_ttl_s == ttl
                && info.req_expires_at == expires_at
                && info.closed == closed
                && info.fork == fork_request;
            if !same {
                return Err(StreamError::conflict(
                    "a stream with a different configuration exists at this path",
                ));
            }
            // Retention is not part of the comparison: a re-PUT without it confirms the
            // stream as it is; one with other values than the stream's is refused.
            if !retention.is_empty() && retention != info.retention {
                return Err(StreamError::conflict(
                    "the stream exists with a different retention (change it with PATCH)",
                ));
            }
            // Compaction likewise: only a different mode than the stream's is refused.
            if compaction.is_some() && info.compaction.is_none() {
                return Err(StreamError::conflict(
                    "the stream exists without Stream-Compaction",
                ));
            }
            return Ok(Some(created(StatusCode::OK, existing, location)));
        }
        Found::Missing => {}
    }
    if fork_request.as_ref().is_some_and(|f| f.source == path) {
        return Err(StreamError::not_found());
    }

    let json_type = content_type.is_some_and(|ct| media_type(ct) == "application/json");
    let limits = crate::json::Limits::of(&streams.config);
    let (body, values) = match initial {
        Initial::Body(body) => (body, None),
        Initial::Values(values, expected) => {
            if !json_type || fork_request.is_some() {
                return Err(StreamError::bad_request(
                    "JSON values start a JSON stream that is not a fork",
                ));
            }
            limits.check_values(&values)?;
            (Bytes::new(), Some((values, expected)))
        }
    };
    // Validate the body before locking a fork source.
    let mut spans = if json_type {
        limits.split_async(&body, true).await?
    } else {
        Vec::new()
    };
    let (base, source) = match &fork_request {
        Some(request) => {
            let (base, source) =
                fork::prepare(streams, request, content_type, ttl, expires_at, now).await?;
            (base, Some(source))
        }
        None => (
            ForkBase {
                content_type: content_type.unwrap_or(DEFAULT_TYPE).to_owned(),
                ttl_s: ttl,
                expires_at,
                start: 0,
                retained: 0,
                lineage: Vec::new(),
            },
            None,
        ),
    };
    let is_json = media_type(&base.content_type) == "application/json";
    if compaction.is_some() && (!is_json || fork_request.is_some()) {
        return Err(StreamError::bad_request(
            "Stream-Compaction needs a JSON stream that is not a fork",
        ));
    }
    if is_json && !json_type {
        spans = limits.split_async(&body, true).await?;
    }
    let (chunks, pos) = if let Some((values, _)) = &values {
        crate::json::pack(values.iter().map(Vec::as_slice), base.start)
    } else if is_json {
        crate::json::pack(spans.iter().map(|r| &body[r.clone()]), base.start)
    } else if body.is_empty() {
        (Vec::new(), base.start)
    } else {
        let chunk = StreamChunk {
            offset: base.start,
            data: body.to_vec(),
        };
        let end = chunk.end();
        (vec![chunk], end)
    };
    let mut info = StreamInfo {
        ttl_s: base.ttl_s,
        expires_at: base.expires_at,
        req_ttl_s: ttl,
        req_expires_at: expires_at,
        closed,
        start: base.start,
        lineage: base.lineage,
        fork: fork_request.clone(),
        inherited_start: base.retained,
        compaction,
        ..StreamInfo::new(base.content_type, now, retention.clone())
    };
    let admitted = match &values {
        Some((_, expected)) => admit(streams, h, *expected)?,
        None => None,
    };
    if let Some((id, state)) = &admitted {
        info.producers.insert(id.clone(), state.clone());
    }
    let (producers, written) = streams.producer_update(&mut info);
    // The prefix quota's lock (taken last: after the fork source's) is held until the stream
    // is written.
    let _quota = crate::limits::reserve(streams, path).await?;
    let mut meta = Stream::encode(path, pos, &info)?;
    meta.start = base.retained;
    // Initial data becomes visible with the stream: only once durable.
    let durability = if chunks.is_empty() {
        durability
    } else {
        Durability::Confirmed
    };
    let made = match source {
        None => {
            streams
                .store
                .create_stream_with_producers(&meta, &chunks, producers, durability)
                .await?
        }
        Some(source) => create_fork(streams, &meta, &chunks, source, durability).await?,
    };
    if !made && values.is_some() {
        // The path exists (not loaded above) or another node created it: append instead.
        return Ok(None);
    }
    if !made {
        // On a shared engine another node created the path or wrote the source meanwhile:
        // decided again on fresh state (see `create`), which then confirms or refuses.
        if !streams.exclusive {
            return Err(StreamError::stale());
        }
        return Err(StreamError::conflict(
            "the stream (or its fork source) changed concurrently",
        ));
    }
    let new = Stream {
        tail: pos,
        retained: base.retained,
        persisted_expiry: meta.expires_at,
        info,
        stored_state: meta.state.as_slice().into(),
    };
    let mut response = created(StatusCode::CREATED, &new, location);
    if let Some((_, state)) = &admitted {
        for (name, value) in crate::producer::echo(state) {
            if let Ok(v) = value.parse() {
                response.headers_mut().insert(name, v);
            }
        }
    }
    let object = g.get_or_insert_with(|| StreamObject::new(None, streams.wakes.sender(path)));
    object.stream = Some(new);
    object.producers.extend(written);
    object.notify();
    Ok(Some(response))
}

/// The producer of a create's headers, as a first request admits it: the stream has no row
/// yet, so `expected` must say so and the request must be its `Producer-Seq: 0`.
fn admit(
    streams: &Streams,
    h: &HeaderMap,
    expected: ExpectedEpoch,
) -> StreamResult<Option<(String, ProducerState)>> {
    let Some(p) = headers::producer(h, streams.config.max_producer_id_bytes)? else {
        return Ok(None);
    };
    crate::producer::expect(expected, None)?;
    // Producer-Seq 0, or the refusal any first request of a producer gets.
    crate::producer::check(None, &p)?;
    let state = ProducerState {
        epoch: p.epoch,
        seq: 0,
    };
    Ok(Some((p.id, state)))
}

/// Writes the fork and its source's new reference count in one engine transaction, then
/// updates the (still locked) source's cached state.
async fn create_fork(
    streams: &Streams,
    meta: &StreamMeta,
    chunks: &[StreamChunk],
    source: LockedSource,
    durability: Durability,
) -> StreamResult<bool> {
    let LockedSource {
        mut guard,
        tail,
        info,
    } = source;
    let source_meta = Stream::encode(guard.key(), tail, &info)?;
    let source_retained = stream(&guard).map_or(0, |s| s.retained);
    crate::failpoint::hit("fork-before-commit").await;
    // The source's tail is not part of the link: another node's appends may move it meanwhile
    // (they leave the state as it is), and the fork depends only on data below its point. Its
    // start is: another node's trim raises it without changing the state, and the fork reads
    // the source from `source_retained` (its floor) on.
    let shared = stream(&guard).filter(|_| !streams.exclusive);
    let link = ForkSource {
        path: guard.key().to_owned(),
        state: source_meta.state,
        expires_at: source_meta.expires_at,
        expected_state: shared.map(|s| s.stored_state.to_vec()),
        max_start: shared.map(|_| source_retained),
    };
    let made = streams
        .store
        .create_fork(meta, chunks, &link, durability)
        .await?;
    if let Some(object) = guard.state_mut() {
        if made {
            object.stream = Some(Stream {
                tail,
                retained: source_retained,
                info,
                persisted_expiry: link.expires_at,
                stored_state: link.state.as_slice().into(),
            });
        } else {
            // Another node changed the source: re-read it next time.
            object.stream = None;
        }
    }
    Ok(made)
}

fn created(status: StatusCode, s: &Stream, location: &str) -> Response {
    let mut r = status.into_response();
    let h = r.headers_mut();
    if let Ok(v) = s.info.content_type.parse() {
        h.insert("content-type", v);
    }
    if let Ok(v) = offset::format(s.tail).parse() {
        h.insert(NEXT_OFFSET, v);
    }
    if s.info.closed {
        h.insert(CLOSED, axum::http::HeaderValue::from_static("true"));
    }
    if status == StatusCode::CREATED {
        if let Ok(v) = location.parse() {
            h.insert("location", v);
        }
    }
    r
}
