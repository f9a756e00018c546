//! Forks: `PUT` with `Stream-Forked-From` creates a stream that reads its source's data up to
//! a divergence point, then its own appends.
//!
//! Forks share the source's offset space, so inheritance is pointer-based, not a copy: the
//! fork records its lineage (each ancestor's path and first own offset) and its own data starts
//! at the fork point. Reads walk the lineage ranges, then the fork's own chunks. Ancestor data
//! below a fork point never changes (streams are append-only), so no lock on the source is
//! needed to read it.
//!
//! Each stream counts the forks that name it as direct source. Deleting a stream with forks
//! soft-deletes it (410 to clients, data kept); deleting the last fork releases the reference
//! and deletes soft-deleted sources, cascading up the chain (`Streams::remove_released`). The
//! reference is taken by the fork's creation itself and dropped by its deletion:
//! `StreamStore::create_fork` / `delete_fork` write the fork and the source's new count in one
//! engine transaction, so neither a rejected fork nor a crash (kill -9 at any point) can leave
//! a source counting a fork that does not exist — which would keep it undeletable forever.
//! [`prepare`] validates under the source's lock and hands that lock to the creation, so the
//! source cannot change in between on this node. Another node may still append to it: the
//! engine writes only the source's state (never its tail) and, on a shared engine, requires
//! the state the fork was decided on, which plain appends leave as it is, and at most the
//! retained start it was decided on (a trim raises only the start). So appends never refuse a
//! fork; a close, a delete, another fork or a trim meanwhile does, and the fork is decided
//! again (`Streams::retry_stale`).

use axum::http::HeaderMap;
use sessiond_store::Millis;

use crate::error::{StreamError, StreamResult};
use crate::headers;
use crate::offset::{self, Offset};
use crate::protocol::STREAM_PREFIX;
use crate::protocol::{FORKED_FROM, FORK_OFFSET, FORK_SUB_OFFSET};
use crate::service::{stream, Found, Guard, Streams};
use crate::state::{media_type, Ancestor, ForkRequest, StreamInfo};

/// What a fork starts from.
pub struct ForkBase {
    pub content_type: String,
    pub ttl_s: Option<u64>,
    pub expires_at: Option<Millis>,
    pub start: u64,
    /// The source's retained start: the fork's own, and its floor on the source.
    pub retained: u64,
    pub lineage: Vec<Ancestor>,
}

/// A validated fork source, still locked: its metadata with the new fork counted, to write
/// together with the fork (`tail` is the one read, for the cache: the engine keeps the stored
/// one).
pub struct LockedSource {
    pub guard: Guard,
    pub tail: u64,
    pub info: StreamInfo,
}

/// The fork headers of a PUT, validated for syntax.
pub fn parse_request(h: &HeaderMap, max_name_bytes: usize) -> StreamResult<Option<ForkRequest>> {
    let sub = match headers::get(h, FORK_SUB_OFFSET)? {
        None => None,
        Some(v) => {
            let v = v.trim();
            Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|_| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        StreamError::bad_request(
                            "Stream-Fork-Sub-Offset must be a non-negative integer",
                        )
                    })?,
            )
        }
    };
    let offset = match headers::get(h, FORK_OFFSET)? {
        None => None,
        Some(v) => match offset::parse(v.trim()) {
            Some(Offset::Start) => Some(0),
            Some(Offset::At(p)) => Some(p),
            Some(Offset::Now) | None => {
                return Err(StreamError::bad_request(
                    "Stream-Fork-Offset is not a valid offset",
                ))
            }
        },
    };
    let Some(from) = headers::get(h, FORKED_FROM)? else {
        if sub.is_some() || offset.is_some() {
            return Err(StreamError::bad_request(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ));
        }
        return Ok(None);
    };
    let sub_offset = sub.unwrap_or(0);
    if sub_offset > 0 && offset.is_none() {
        return Err(StreamError::bad_request(
            "Stream-Fork-Sub-Offset needs Stream-Fork-Offset",
        ));
    }
    let from = from.trim();
    let path = from
        .find(STREAM_PREFIX)
        .map(|i| &from[i + STREAM_PREFIX.len()..])
        .unwrap_or(from.trim_start_matches('/'));
    if path.is_empty() {
        return Err(StreamError::bad_request(
            "Stream-Forked-From names no stream",
        ));
    }
    // The same rules as a stream name in a request path.
    crate::headers::stream_name(&format!("{STREAM_PREFIX}{path}"), max_name_bytes)
        .map_err(|e| StreamError::bad_request(format!("Stream-Forked-From: {}", e.api.message)))?;
    Ok(Some(ForkRequest {
        source: path.to_owned(),
        offset,
        sub_offset,
    }))
}

/// Validates the fork against its source and returns the source, locked, with the fork
/// counted (not yet written: [`StreamStore::create_fork`](sessiond_store::StreamStore) writes
/// it with the fork). `content_type` is the request's, if any.
pub async fn prepare(
    streams: &Streams,
    request: &ForkRequest,
    content_type: Option<&str>,
    ttl: Option<u64>,
    expires_at: Option<Millis>,
    now: Millis,
) -> StreamResult<(ForkBase, LockedSource)> {
    let mut g = streams.lock(&request.source).await?;
    match streams.find(&mut g, now).await? {
        Found::Live => {}
        Found::Missing => return Err(StreamError::not_found()),
        Found::Gone => return Err(StreamError::conflict("the fork source was deleted")),
    }
    // The fork point must be durable: wait for the source's appends in flight.
    streams.settle(&mut g).await?;
    let Some((snap, _)) = Streams::snapshot(&g) else {
        return Err(StreamError::not_found());
    };
    let Some(src) = stream(&g).cloned() else {
        return Err(StreamError::not_found());
    };
    if let Some(ct) = content_type {
        if media_type(ct) != src.info.media_type() {
            return Err(StreamError::conflict(
                "Content-Type differs from the fork source's",
            ));
        }
    }
    let anchor = request.offset.unwrap_or(src.tail);
    if anchor > src.tail {
        return Err(StreamError::bad_request(
            "Stream-Fork-Offset is past the source's tail",
        ));
    }
    let mut point = anchor;
    if request.sub_offset > 0 {
        if src.tail == 0 {
            return Err(StreamError::bad_request(
                "Stream-Fork-Sub-Offset on an empty source",
            ));
        }
        point = sub_point(streams, &snap, anchor, request.sub_offset).await?;
    }
    let (ttl_s, expires_at) = match (ttl, expires_at) {
        (None, None) => (src.info.ttl_s, src.info.expires_at),
        own => own,
    };
    let mut lineage = src.info.lineage.clone();
    lineage.push(Ancestor {
        path: request.source.clone(),
        start: src.info.start,
    });
    if point < src.retained {
        let start = offset::format(src.retained);
        return Err(StreamError::bad_request(format!(
            "the fork point is below the source's retained start {start} (Stream-Start-Offset)"
        ))
        .with(crate::protocol::START_OFFSET, start));
    }
    let mut info = src.info.clone();
    info.forks += 1;
    info.fork_floors.push(src.retained);
    info.fork_points.push(point);
    let base = ForkBase {
        content_type: src.info.content_type.clone(),
        ttl_s,
        expires_at,
        start: point,
        retained: src.retained,
        lineage,
    };
    let source = LockedSource {
        guard: g,
        tail: src.tail,
        info,
    };
    Ok((base, source))
}

/// Resolves `(anchor, sub)`: `sub` values past the anchor (JSON) or `sub` bytes into the message
/// at the anchor (binary). Past the next boundary is a 400.
async fn sub_point(
    streams: &Streams,
    snap: &crate::service::Snapshot,
    anchor: u64,
    sub: u64,
) -> StreamResult<u64> {
    let overshoot =
        || StreamError::bad_request("Stream-Fork-Sub-Offset is past the next data boundary");
    if snap.json {
        let mut pos = anchor;
        let mut left = usize::try_from(sub).unwrap_or(usize::MAX);
        while left > 0 {
            let page = streams.read_limited(snap, pos, 1 << 20, left).await?;
            if page.messages == 0 || page.next <= pos {
                return Err(overshoot());
            }
            left -= page.messages.min(left);
            pos = page.next;
        }
        return Ok(pos);
    }
    let boundary = streams
        .message_end(snap, anchor)
        .await?
        .ok_or_else(overshoot)?;
    // Checked: a sub-offset near 2^64 must not wrap below the boundary.
    match anchor.checked_add(sub) {
        Some(point) if point <= boundary => Ok(point),
        _ => Err(overshoot()),
    }
}
