//! Running a compaction: the scan and plan without the stream's lock, then bounded batches
//! each under it (see the module docs of `compaction` for the order that makes a crash
//! harmless). Explicit (`POST` with `Stream-Compact-Before`) and background (the sweeper, once
//! `trigger_bytes` were appended since the last compaction point) runs share it.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_store::{now_ms, Durability, Millis};

use super::plan::{classify, plan, Chunk, Event, Rules};
use crate::error::{StreamError, StreamResult};
use crate::offset;
use crate::protocol::{CLOSED, COMPACT_BEFORE, START_OFFSET};
use crate::service::{stream, Streams};
use crate::state::StreamInfo;
use crate::trim::maintenance_offset;

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// The compaction point reached (the one asked for, capped by the fork points).
    pub before: u64,
    /// Chunks dropped.
    pub chunks: usize,
}

/// `POST` with `Stream-Compact-Before` and an empty body: compacts up to that offset, 204
/// with the point reached in `Stream-Compact-Before` and `Stream-Start-Offset`.
pub async fn explicit(
    streams: &Streams,
    path: &str,
    h: &HeaderMap,
    body: &Bytes,
) -> StreamResult<Response> {
    let before = maintenance_offset(h, body, COMPACT_BEFORE, "Stream-Compact-Before")?;
    let (retained, closed) = streams
        .retry_stale(|| check_explicit(streams, path, before))
        .await?;
    let done = streams.compact(path, before, now_ms()).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    for (name, value) in [(COMPACT_BEFORE, done.before), (START_OFFSET, retained)] {
        if let Ok(v) = HeaderValue::from_str(&offset::format(value)) {
            r.headers_mut().insert(name, v);
        }
    }
    if closed {
        r.headers_mut()
            .insert(CLOSED, HeaderValue::from_static("true"));
    }
    Ok(r)
}

/// Validates an explicit compaction point against the live stream and refreshes its sliding
/// TTL (a write). Returns its retained start and whether it is closed.
async fn check_explicit(streams: &Streams, path: &str, before: u64) -> StreamResult<(u64, bool)> {
    let now = now_ms();
    let mut g = streams.lock_live(path, now).await?;
    streams.settle(&mut g).await?;
    streams.touch(&mut g, now).await?;
    let Some((snap, _)) = Streams::snapshot(&g) else {
        return Err(StreamError::not_found());
    };
    if stream(&g).is_none_or(|s| s.info.compaction.is_none()) {
        return Err(StreamError::bad_request(
            "the stream was not created with Stream-Compaction: key",
        ));
    }
    if before > snap.tail {
        return Err(StreamError::bad_request(format!(
            "Stream-Compact-Before {} is past the tail {}",
            offset::format(before),
            offset::format(snap.tail)
        )));
    }
    if before > snap.retained && !streams.is_boundary(&snap, before).await? {
        return Err(StreamError::bad_request(
            "Stream-Compact-Before is not a message boundary",
        ));
    }
    Ok((snap.retained, snap.closed))
}

/// A compaction's decisions, taken under the stream's lock.
struct Setup {
    retained: u64,
    tail: u64,
    /// The lowest live fork point (`u64::MAX` without forks).
    ceiling: u64,
    rules: Rules,
    key: Vec<String>,
}

impl Streams {
    /// Compacts `path` below `before` (capped at its lowest live fork point). Nothing happens
    /// on a stream without compaction.
    pub async fn compact(&self, path: &str, before: u64, now: Millis) -> StreamResult<Compacted> {
        let Some(setup) = self.compaction_rules(path, before, now).await? else {
            return Ok(Compacted::default());
        };
        let Setup {
            retained,
            tail,
            ceiling,
            rules,
            key,
        } = setup;
        let tail_or_ceiling = (ceiling < tail).then_some(ceiling);
        // With live forks, "latest" is decided below the lowest fork point only: a fork sees
        // the source up to there, and must find there the event that superseded a dropped one.
        let until = match tail_or_ceiling {
            Some(ceiling) => ceiling,
            None => tail,
        };
        let chunks = self.scan(path, retained, until, &key).await?;
        let p = plan(&chunks, rules);
        let mut done = Compacted {
            before: rules.before,
            chunks: 0,
        };
        let batch = self.config.compaction.batch_chunks;
        for (i, (offsets, purges)) in p.drop.chunks(batch).zip(p.purges.chunks(batch)).enumerate() {
            if i > 0 {
                crate::failpoint::hit("compaction-between-batches").await;
            }
            let purged = purges.iter().copied().max().unwrap_or(0);
            if !self.drop_batch(path, offsets, purged, until, None).await? {
                // Trimmed or sealed meanwhile: the next run decides on fresh data.
                return Ok(done);
            }
            done.chunks += offsets.len();
        }
        self.drop_batch(path, &[], 0, until, Some((rules.before, tail)))
            .await?;
        crate::metrics::compacted(done.chunks);
        Ok(done)
    }

    /// The rules of a compaction of `path` up to `before` decided on its current state, or
    /// `None` without compaction.
    async fn compaction_rules(
        &self,
        path: &str,
        before: u64,
        now: Millis,
    ) -> StreamResult<Option<Setup>> {
        let mut g = self.lock_live(path, now).await?;
        self.settle(&mut g).await?;
        let Some(s) = stream(&g) else {
            return Err(StreamError::not_found());
        };
        let Some(compaction) = &s.info.compaction else {
            return Ok(None);
        };
        let config = &self.config.compaction;
        let tail = s.tail;
        let ceiling = fork_ceiling(&s.info);
        let before = before.min(tail).min(ceiling);
        // Events in cold segments are not seen by the scan: no delete may be purged then.
        let cold = self
            .store
            .segments(path)
            .await?
            .iter()
            .any(|seg| seg.end > s.retained);
        let grace_cut = match cold {
            true => 0,
            false => older_than(&s.info, config.tombstone_grace_s, now, tail),
        };
        let rules = Rules {
            before,
            grace_cut,
            txid_cut: older_than(&s.info, config.min_age_s, now, tail),
            keep_deletes: s.info.forks > 0,
        };
        Ok(Some(Setup {
            retained: s.retained,
            tail,
            ceiling,
            rules,
            key: compaction.key.clone(),
        }))
    }

    /// The stream's hot chunks from `retained` up to `until` with their classified messages
    /// (those in `[retained, until)`). Chunks below a tail never change except by being
    /// dropped, so no lock is held.
    async fn scan(
        &self,
        path: &str,
        retained: u64,
        until: u64,
        key: &[String],
    ) -> StreamResult<Vec<Chunk>> {
        let mut out = Vec::new();
        let mut pos = retained;
        loop {
            let chunks = self
                .store
                .read_chunks(path, pos, self.config.max_read_chunk_bytes)
                .await?;
            let Some(last) = chunks.last().map(|c| c.end()) else {
                return Ok(out);
            };
            for c in chunks.into_iter().filter(|c| c.end() > pos) {
                if c.offset >= until {
                    return Ok(out);
                }
                let mut events = Vec::new();
                let mut at = 0;
                while at < c.data.len() {
                    let (end, next) = crate::json::next_message(&c.data, at);
                    let offset = c.offset + at as u64;
                    if offset >= retained && offset < until {
                        events.push(Event {
                            offset,
                            kind: classify(&c.data[at..end], key),
                        });
                    }
                    at = next.max(at + 1);
                }
                out.push(Chunk {
                    offset: c.offset,
                    end: c.end(),
                    events,
                    droppable: c.offset >= retained,
                });
            }
            if last <= pos || last >= until {
                return Ok(out);
            }
            pos = last;
            tokio::task::yield_now().await;
        }
    }

    /// One batch under the stream's lock: commits the raised purge point and the next
    /// generation (and, with `finished`, the compaction point and the tail the run decided
    /// on), then drops `offsets`. False
    /// when the engine refused the drop.
    async fn drop_batch(
        &self,
        path: &str,
        offsets: &[u64],
        purged: u64,
        until: u64,
        finished: Option<(u64, u64)>,
    ) -> StreamResult<bool> {
        self.retry_stale(|| async {
            let mut g = self.lock_live(path, now_ms()).await?;
            self.settle(&mut g).await?;
            let Some(s) = stream(&g) else {
                return Err(StreamError::not_found());
            };
            let (tail, mut info) = (s.tail, s.info.clone());
            // A fork made since the scan may read data this run would change (and keeps
            // deletes: see `Rules::keep_deletes`).
            if fork_ceiling(&info) < until || (info.forks > 0 && purged > 0) {
                return Ok(false);
            }
            let Some(c) = info.compaction.as_mut() else {
                return Ok(false);
            };
            c.purged = c.purged.max(purged);
            if !offsets.is_empty() {
                c.generation += 1;
            }
            if let Some((point, ran_at_tail)) = finished {
                c.compacted_to = c.compacted_to.max(point);
                c.ran_at_tail = c.ran_at_tail.max(ran_at_tail);
            }
            self.commit(&mut g, tail, &[], info, false).await?;
            if offsets.is_empty() {
                return Ok(true);
            }
            let dropped = self
                .store
                .drop_chunks(path, offsets, Durability::Confirmed)
                .await?;
            if let Some(object) = g.state_mut() {
                object.notify();
            }
            Ok(dropped)
        })
        .await
    }
}

/// The highest offset compaction may reach given the stream's live forks: the lowest fork
/// point (forks read the data below it by reference). Forks counted before fork points were
/// recorded have unknown points: nothing may be compacted then.
pub fn fork_ceiling(info: &StreamInfo) -> u64 {
    if (info.fork_points.len() as u64) < info.forks {
        return 0;
    }
    info.fork_points.iter().copied().min().unwrap_or(u64::MAX)
}

/// The offset below which everything was appended more than `age_s` seconds before `now`,
/// from the stream's time marks (see `retention.rs`); `tail` when `age_s` is 0.
pub fn older_than(info: &StreamInfo, age_s: u64, now: Millis, tail: u64) -> u64 {
    if age_s == 0 {
        return tail;
    }
    let oldest = now.saturating_sub((age_s as i64).saturating_mul(1000));
    info.marks
        .iter()
        .rev()
        .find(|(at, _)| *at <= oldest)
        .map_or(0, |(_, offset)| *offset)
}
