//! Retention: dropping a stream's history below an offset, for good.
//!
//! A trim has a logical and a physical half. The logical half is the stream's retained start
//! (`StreamMeta::start`, engine-managed): once raised, every read below it is a 410
//! `offset_gone` naming the new start, and offsets above it never change. The physical half
//! deletes the rows (and cold segments) below it. `StreamStore::trim_stream` does both in one
//! engine transaction, a bounded batch of chunks at a time: the first batch runs under the
//! stream's lock (so the cached start and the stored one move together), the rest after it is
//! released, so appends to a big stream never wait behind a long delete. A crash between
//! batches leaves the start raised and some rows below it; the next trim of the stream (the
//! sweeper's retention pass trims again) reclaims them.
//!
//! Forks read their source's data below their fork point by reference, from the source's
//! retained start when the fork was made on. So a source is never trimmed past the lowest
//! such start of its live forks ([`fork_floor`]): a trim asking for more is clamped there (the
//! 204's `Stream-Start-Offset` says where it stopped), and goes further once those forks are
//! deleted. On an engine shared by several nodes the floor is read from the cached state,
//! which may miss a fork another node just made; so the first batch carries that state and the
//! engine refuses it if the state changed (a fork counts itself in it), and the trim is decided
//! again on fresh state (`Streams::retry_stale`). The other order is covered by the fork: it
//! requires the source's stored start to be at most the floor it was decided on.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_store::{now_ms, Durability, Millis};

use crate::error::{StreamError, StreamResult};
use crate::headers;
use crate::offset::{self, Offset};
use crate::protocol::{self, CLOSED, START_OFFSET, TRIM_BEFORE};
use crate::service::{stream, Streams};
use crate::state::StreamInfo;

/// Headers of the appending kind, which a maintenance request (trim, compaction) may not carry:
/// it changes no data, no closure, no producer, and one request does one thing.
const WRITE_HEADERS: [&str; 7] = [
    CLOSED,
    protocol::TRIM_BEFORE,
    protocol::COMPACT_BEFORE,
    protocol::SEQ,
    protocol::PRODUCER_ID,
    protocol::PRODUCER_EPOCH,
    protocol::PRODUCER_SEQ,
];

/// The offset of a maintenance `POST` (empty body, only the header `name`, shown as `shown` in
/// messages): `Stream-Trim-Before` and `Stream-Compact-Before` are validated alike.
pub(crate) fn maintenance_offset(
    h: &HeaderMap,
    body: &Bytes,
    name: &str,
    shown: &str,
) -> StreamResult<u64> {
    if !body.is_empty() {
        return Err(StreamError::bad_request(format!(
            "{shown} needs an empty body"
        )));
    }
    let mut exclusive = WRITE_HEADERS.iter().filter(|other| **other != name);
    if let Some(other) = exclusive.find(|other| h.contains_key(**other)) {
        return Err(StreamError::bad_request(format!(
            "{shown} cannot be combined with {other}"
        )));
    }
    let raw = headers::get(h, name)?.unwrap_or_default().trim();
    match offset::parse(raw) {
        Some(Offset::At(before)) => Ok(before),
        _ => Err(StreamError::bad_request(format!(
            "{shown} must be an offset this server returned"
        ))),
    }
}

/// The highest offset the stream's live forks allow trimming to: the lowest start they
/// inherited from.
/// Forks counted before fork points were recorded have unknown points: nothing may go then.
pub fn fork_floor(info: &StreamInfo) -> u64 {
    if (info.fork_floors.len() as u64) < info.forks {
        return 0;
    }
    info.fork_floors.iter().copied().min().unwrap_or(u64::MAX)
}

/// `POST` with `Stream-Trim-Before` and an empty body: 204 with the new `Stream-Start-Offset`.
pub async fn explicit(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    body: &Bytes,
) -> StreamResult<Response> {
    let before = maintenance_offset(h, body, TRIM_BEFORE, "Stream-Trim-Before")?;
    let (start, closed) = streams
        .retry_stale(|| trim_checked(streams, path, before, now_ms()))
        .await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&offset::format(start)) {
        r.headers_mut().insert(START_OFFSET, v);
    }
    if closed {
        r.headers_mut()
            .insert(CLOSED, HeaderValue::from_static("true"));
    }
    Ok(r)
}

/// One attempt of an explicit trim: validates `before` against the live stream, refreshes its
/// sliding TTL and trims. Returns the new start and whether the stream is closed.
async fn trim_checked(
    streams: &Streams,
    path: &str,
    before: u64,
    now: Millis,
) -> StreamResult<(u64, bool)> {
    let mut g = streams.lock_live(path, now).await?;
    streams.settle(&mut g).await?;
    streams.touch(&mut g, now).await?;
    let Some((snap, _)) = Streams::snapshot(&g) else {
        return Err(StreamError::not_found());
    };
    if before > snap.tail {
        return Err(StreamError::bad_request(format!(
            "Stream-Trim-Before {} is past the tail {}",
            offset::format(before),
            offset::format(snap.tail)
        )));
    }
    if before > snap.retained && !streams.is_boundary(&snap, before).await? {
        return Err(StreamError::bad_request(
            "Stream-Trim-Before is not a message boundary",
        ));
    }
    let start = streams.trim_locked(&mut g, before).await?;
    drop(g);
    streams.trim_rest(path, start).await?;
    Ok((start, snap.closed))
}

impl Streams {
    /// The locked half of a trim to `before` (clamped at the fork floor): raises the start,
    /// deletes the first batch and updates the cached stream; wakes readers so the ones behind
    /// get their 410. Returns the new start.
    pub(crate) async fn trim_locked(
        &self,
        g: &mut crate::service::Guard,
        before: u64,
    ) -> StreamResult<u64> {
        let Some(s) = stream(g) else {
            return Err(StreamError::not_found());
        };
        // At or below the current start this raises nothing but still reclaims rows a crash
        // between two batches left behind.
        let before = before.min(fork_floor(&s.info)).max(s.retained);
        // On a shared engine the floor above may miss a fork another node just made: the
        // engine then refuses the trim (the fork changed the state) and it is decided again.
        let expected = (!self.exclusive).then(|| s.stored_state.to_vec());
        let batch = self.config.trim_batch_chunks;
        let Some(trimmed) = self
            .store
            .trim_stream(
                g.key(),
                before,
                batch,
                expected.as_deref(),
                Durability::Confirmed,
            )
            .await?
        else {
            if expected.is_none() {
                return Err(StreamError::not_found());
            }
            // Changed or gone on another node: re-read it next time.
            if let Some(object) = g.state_mut() {
                object.stream = None;
            }
            return Err(StreamError::stale());
        };
        if let Some(object) = g.state_mut() {
            if let Some(s) = object
                .stream
                .as_mut()
                .filter(|s| s.retained != trimmed.start)
            {
                s.retained = trimmed.start;
                object.notify();
            }
        }
        crate::metrics::trimmed(trimmed.chunks);
        self.cold
            .delete_segments(g.key(), &trimmed.segments)
            .await?;
        if trimmed.more {
            crate::failpoint::hit("trim-between-batches").await;
        }
        Ok(trimmed.start)
    }

    /// The unlocked half: deletes the remaining batches below `start`. Unchecked: `start` is
    /// stored already, so these batches raise nothing (forks made meanwhile start at or above
    /// it, see `ForkSource::max_start`).
    pub(crate) async fn trim_rest(&self, path: &str, start: u64) -> StreamResult<()> {
        loop {
            let Some(trimmed) = self
                .store
                .trim_stream(
                    path,
                    start,
                    self.config.trim_batch_chunks,
                    None,
                    Durability::Confirmed,
                )
                .await?
            else {
                return Ok(());
            };
            crate::metrics::trimmed(trimmed.chunks);
            self.cold.delete_segments(path, &trimmed.segments).await?;
            if !trimmed.more {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }
}
