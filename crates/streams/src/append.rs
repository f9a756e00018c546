//! `POST /v1/stream/<path>`: append, close, or both at once.
//!
//! The whole request is decided under the stream's lock and written with ONE
//! `StreamStore::commit`: the chunks, the new tail, the closed flag and closing producer, the
//! producer's new (epoch, seq) and the new `Stream-Seq`. The reply is sent only after that
//! commit is durable, and waiting readers are woken only then. A plain append (data, no close)
//! is pipelined: enqueued under the lock, awaited after it (`pipeline.rs`), so checks run
//! against the assigned state, which includes appends still in flight. On an engine shared by
//! several nodes it is instead sent so that the engine may move it to the stored tail
//! (`shared_append.rs`): its offsets are the engine's answer, not the cached tail.
//!
//! Precedence of refusals follows the protocol: a closed stream (409 + `Stream-Closed`) wins
//! over a content-type mismatch, which wins over a `Stream-Seq` regression; a retry of the
//! request that closed the stream (same producer tuple) succeeds as a no-op.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use sessiond_store::{now_ms, StreamChunk};

use crate::error::{StreamError, StreamResult};
use crate::headers;
use crate::offset;
use crate::producer::{self, Verdict};
use crate::protocol::{CLOSED, NEXT_OFFSET};
use crate::service::{stream, Streams};
use crate::state::same_media_type;

/// What an append carries: a request body, or JSON values a server-side producer already
/// serialized one by one (no parse and re-serialization of a JSON array).
#[derive(Clone)]
enum Payload {
    Body(Bytes),
    JsonValues(Vec<Vec<u8>>),
}

impl Payload {
    fn is_empty(&self) -> bool {
        match self {
            Payload::Body(b) => b.is_empty(),
            Payload::JsonValues(v) => v.is_empty(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Payload::Body(b) => b.len(),
            Payload::JsonValues(v) => v.iter().map(Vec::len).sum(),
        }
    }

    /// The chunks to store from offset `start`, and the offset after them: a JSON body's
    /// messages packed (see `json.rs`), any other body as one chunk, pre-serialized values
    /// validated and packed.
    async fn into_chunks(
        self,
        json: bool,
        limits: &crate::json::Limits,
        start: u64,
    ) -> StreamResult<(Vec<StreamChunk>, u64)> {
        match self {
            Payload::Body(b) if b.is_empty() => Ok((Vec::new(), start)),
            Payload::Body(b) if json => {
                let spans = limits.split_async(&b, false).await?;
                Ok(crate::json::pack(
                    spans.iter().map(|r| &b[r.clone()]),
                    start,
                ))
            }
            Payload::Body(b) => {
                let chunk = StreamChunk {
                    offset: start,
                    data: b.to_vec(),
                };
                let end = chunk.end();
                Ok((vec![chunk], end))
            }
            Payload::JsonValues(values) if json => {
                limits.check_values(&values)?;
                Ok(crate::json::pack(values.iter().map(Vec::as_slice), start))
            }
            Payload::JsonValues(_) => Err(StreamError::conflict(
                "JSON values can only be appended to a JSON stream",
            )),
        }
    }
}

/// Handles a POST.
pub async fn append(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    body: Bytes,
) -> StreamResult<Response> {
    append_payload(streams, path, h, Payload::Body(body), None).await
}

/// Appends `values`, each one JSON value serialized by an in-process producer (the server's
/// own system streams), to the JSON stream `path`, as a POST with a JSON array body and
/// headers `h` would, without building an array to parse it back. Each value is validated
/// (one value, no surrounding whitespace) and stored byte for byte.
pub async fn append_json_values(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    values: Vec<Vec<u8>>,
) -> StreamResult<Response> {
    append_payload(streams, path, h, Payload::JsonValues(values), None).await
}

/// [`append_json_values`] decided only if the request's producer (`Producer-Id` in `h`) has
/// the epoch `expected` on the stream when the request is decided (412 `producer_epoch_moved`
/// otherwise, see `producer::ExpectedEpoch`).
pub async fn append_json_values_expecting(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    values: Vec<Vec<u8>>,
    expected: producer::ExpectedEpoch,
) -> StreamResult<Response> {
    let payload = Payload::JsonValues(values);
    append_payload(streams, path, h, payload, Some(expected)).await
}

async fn append_payload(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    body: Payload,
    expected: Option<producer::ExpectedEpoch>,
) -> StreamResult<Response> {
    // Most appends carry none of the protocol's request headers: one look at the few names
    // sent, then the lookups below (nine, each hashing a name of its own) see an empty map.
    let empty;
    let p = if headers::any_append_header(h) {
        h
    } else {
        empty = HeaderMap::new();
        &empty
    };
    if p.contains_key(headers::TRIM_BEFORE_NAME) {
        let Payload::Body(body) = body else {
            return Err(StreamError::bad_request(
                "Stream-Trim-Before needs an empty body",
            ));
        };
        return crate::trim::explicit(streams, path, h, &body).await;
    }
    if p.contains_key(headers::COMPACT_BEFORE_NAME) {
        let Payload::Body(body) = body else {
            return Err(StreamError::bad_request(
                "Stream-Compact-Before needs an empty body",
            ));
        };
        return crate::compaction::explicit(streams, path, h, &body).await;
    }
    let now = now_ms();
    let close = headers::closed_flag(p);
    let durability = headers::durability(p)?;
    let producer = headers::producer(p, streams.config.max_producer_id_bytes)?;
    if expected.is_some() && producer.is_none() {
        return Err(StreamError::bad_request(
            "an expected producer epoch needs Producer-Id",
        ));
    }
    let seq = headers::stream_seq(p, streams.config.max_stream_seq_bytes)?;
    let content_type = headers::get(h, &axum::http::header::CONTENT_TYPE)?
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if body.is_empty() && !close {
        return Err(StreamError::bad_request(
            "empty body: send data, or Stream-Closed: true to close",
        ));
    }
    let request = Request {
        now,
        close,
        durability,
        producer,
        seq,
        content_type,
        expected,
    };
    // On a shared engine the first attempt decides on the node's cached metadata (no round
    // trip; its commit checks the cached state in the store). A commit that lost a race with
    // another node, or an answer that wrote nothing (a refusal, a duplicate) decided on the
    // cache, is decided again on the stream as it now is: the client sees one consistent
    // outcome, never the race or a stale cache.
    // A commit that lost a race brings back the metadata that won (see `commit_with`), so
    // the retry decides on that without reading it again.
    let started = std::time::Instant::now();
    let mut attempt = 1;
    let mut use_cache = true;
    loop {
        let mut trusted = true;
        let result = decide_and_commit(
            streams,
            path,
            &request,
            body.clone(),
            use_cache.then_some(started),
            &mut trusted,
        )
        .await;
        match result {
            Err(e) if e.is_stale() && attempt < streams.config.max_commit_attempts => {
                crate::metrics::commit_retry();
                attempt += 1;
                streams.commit_backoff(attempt).await;
                use_cache = true;
            }
            _ if !trusted => use_cache = false,
            other => return other,
        }
    }
}

/// What an append decides on: the locked stream's tail and metadata.
struct Current {
    tail: u64,
    info: crate::state::StreamInfo,
}

/// The parsed headers of an append.
struct Request<'a> {
    now: sessiond_store::Millis,
    close: bool,
    durability: sessiond_store::Durability,
    producer: Option<crate::state::ProducerTuple>,
    seq: Option<String>,
    content_type: Option<&'a str>,
    /// The in-process producer's condition on its row (`producer::ExpectedEpoch`).
    expected: Option<producer::ExpectedEpoch>,
}

/// One attempt: lock, check, commit. `trusted` ends false when the outcome was decided on
/// cached metadata without writing anything (the caller decides again on fresh metadata);
/// once a commit is sent its outcome stands (a retry could append twice).
async fn decide_and_commit(
    streams: &Streams,
    path: &str,
    r: &Request<'_>,
    body: Payload,
    use_cache: Option<std::time::Instant>,
    trusted: &mut bool,
) -> StreamResult<Response> {
    let Request {
        now,
        close,
        durability,
        ref producer,
        ref seq,
        content_type,
        expected,
    } = *r;
    let mut g = if let Some(started) = use_cache {
        let (g, fresh) = streams.lock_live_cached(path, now, started).await?;
        *trusted = fresh;
        g
    } else {
        streams.lock_live(path, now).await?
    };
    // Only the tail and the metadata are needed (one copy of the metadata, which the append
    // then changes), not the whole cached stream.
    let Some(current) = stream(&g).map(|s| Current {
        tail: s.tail,
        info: s.info.clone(),
    }) else {
        return Err(StreamError::not_found());
    };
    if current.info.closed {
        if let (Some(p), Some(by)) = (producer, &current.info.closed_by) {
            if p == by {
                return Ok(reply(StatusCode::NO_CONTENT, current.tail, true, None));
            }
        }
        if let Some(p) = producer {
            if let Some(state) = streams.producer(&mut g, &p.id).await? {
                if p.epoch < state.epoch {
                    return Err(producer::stale(state.epoch));
                }
            }
        }
        if body.is_empty() && producer.is_none() {
            streams.touch(&mut g, now).await?;
            return Ok(reply(StatusCode::NO_CONTENT, current.tail, true, None));
        }
        return Err(StreamError::conflict("the stream is closed")
            .with(CLOSED, "true")
            .with(NEXT_OFFSET, offset::format(current.tail)));
    }
    if !body.is_empty() {
        let Some(ct) = content_type else {
            return Err(StreamError::bad_request(
                "Content-Type is required with a body",
            ));
        };
        if !same_media_type(ct, &current.info.content_type) {
            let stream_type = current.info.media_type();
            return Err(StreamError::conflict(mismatch_message(&stream_type)));
        }
    }
    let mut info = current.info;
    let mut accepted = None;
    // A plain append on a shared engine may move to the stored tail (`shared_append.rs`);
    // not while producers from before producer rows are still in the state.
    let shared = !streams.exclusive && !close && !body.is_empty() && info.producers.is_empty();
    let mut before = Vec::new();
    if let Some(p) = producer {
        let seen = streams.producer(&mut g, &p.id).await?;
        if let Some(expected) = expected {
            // On cached metadata a failure is decided again on the stored row (`trusted`).
            producer::expect(expected, seen.as_ref())?;
        }
        let verdict = match producer::check(seen.as_ref(), p) {
            // Decided on this node's cache, whose copy of the row may lag appends made through
            // other nodes: accept the next seq optimistically, the commit requires the row to
            // hold the one before (if not, the request is decided again on the stored row).
            Err(_)
                if shared
                    && !*trusted
                    && seen
                        .as_ref()
                        .is_some_and(|s| s.epoch == p.epoch && p.seq > s.seq) =>
            {
                Verdict::Accept(crate::state::ProducerState {
                    epoch: p.epoch,
                    seq: p.seq,
                })
            }
            other => other?,
        };
        if shared {
            before.push(crate::shared_append::producer_before(p, seen.as_ref()));
        }
        match verdict {
            Verdict::Duplicate(state) => {
                // The original may still be in flight: answer only once it is durable.
                streams.settle(&mut g).await?;
                streams.touch(&mut g, now).await?;
                return Ok(reply(
                    StatusCode::NO_CONTENT,
                    current.tail,
                    false,
                    Some(&state),
                ));
            }
            Verdict::Accept(state) => {
                info.producers.insert(p.id.clone(), state.clone());
                accepted = Some(state);
            }
        }
    }
    if let Some(seq) = seq {
        if info
            .last_seq
            .as_ref()
            .is_some_and(|last| seq.as_bytes() <= last.as_bytes())
        {
            return Err(StreamError::conflict("Stream-Seq must increase"));
        }
        info.last_seq = Some(seq.clone());
    }
    let body_len = body.len();
    let limits = crate::json::Limits::of(&streams.config);
    let (chunks, pos) = body
        .into_chunks(info.is_json(), &limits, current.tail)
        .await?;
    if let Some(first) = chunks.first() {
        let interval = (streams.config.retention_mark_interval_s as i64).saturating_mul(1000);
        crate::retention::mark(&mut info, now, first.offset, interval);
    }
    if close {
        info.closed = true;
        info.closed_by = producer.clone();
    }
    if info.ttl_s.is_some() {
        // Only a sliding TTL reads it; left alone otherwise, so plain appends keep the state.
        info.last_access = now;
    }
    let has_data = !chunks.is_empty();
    *trusted = true;
    let mut pos = pos;
    if shared {
        pos = streams
            .append_shared(&mut g, current.tail, &chunks, info, before, now)
            .await?;
    } else if close || !has_data || !streams.pipelines() {
        streams
            .commit_with(&mut g, current.tail, &chunks, info, true, durability)
            .await?;
    } else {
        streams
            .commit_pipelined(g, current.tail, chunks, info, durability)
            .await?;
    }
    if has_data {
        crate::metrics::appended(body_len, accepted.is_some());
    }
    // An accepted producer append is a 200; a close-only request (no data) is a 204 either way.
    let status = if accepted.is_some() && has_data {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    Ok(reply(status, pos, close, accepted.as_ref()))
}

/// The answer of an append whose stream's tail is now `next`. (Every append answers one:
/// the offset's `String` becomes the header's bytes without a copy, and the name is not
/// parsed again, as a `&str` name would be on each insert.)
fn reply(
    status: StatusCode,
    next: u64,
    closed: bool,
    producer: Option<&crate::state::ProducerState>,
) -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = status;
    // Room for the headers the layers add on the way out (the stream route's four, axum's
    // `Content-Length`, `X-Request-Id`): an empty map is sized for six and rehashes every
    // entry on the seventh.
    *r.headers_mut() = HeaderMap::with_capacity(12);
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(offset::format(next))) {
        h.insert(headers::NEXT_OFFSET_NAME, v);
    }
    if closed {
        h.insert(CLOSED, HeaderValue::from_static("true"));
    }
    if let Some(state) = producer {
        for (name, value) in producer::echo(state) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    r
}

/// The 409 of an append whose `Content-Type` is not the stream's. A stream created without
/// `Content-Type` is `application/octet-stream`, which surprises whoever appends JSON later,
/// so the message says so.
fn mismatch_message(stream_type: &str) -> String {
    let mut message =
        format!("Content-Type does not match the stream's: the stream is `{stream_type}`");
    if stream_type == "application/octet-stream" {
        message.push_str(
            " (a stream created without Content-Type is application/octet-stream; create it \
             with the Content-Type its appends will use, e.g. PUT with Content-Type: \
             application/json)",
        );
    }
    message
}
