//! Background removal of expired streams, retention (see `retention.rs`) and keyed
//! compaction (see `compaction`).
//!
//! Retention walks every stream a batch per pass (`retention_sweep_batch`, resuming after the
//! last path it examined), computes its policy's cut and trims there (`trim.rs`: bounded
//! engine transactions, the lock held only for the first).
//!
//! Expiry is enforced lazily on every access; the sweeper only reclaims space of streams
//! nobody touches. The engine indexes `StreamMeta::expires_at`, which may lag the exact
//! in-memory deadline of a sliding TTL (refreshes are persisted lazily), so every candidate is
//! re-checked under its lock with the authoritative state before anything is deleted.
//!
//! One stream that cannot be removed (its cold segments unreachable, say) must not stop the
//! others: a failing candidate is logged, skipped, and set aside for a while ([`Sweeper`]
//! remembers it), and each pass asks the engine for enough candidates to see past the ones
//! set aside, so the rest keep being swept.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use sessiond_store::now_ms;

use crate::error::StreamResult;
use crate::service::{Found, Streams};

/// Candidates examined per pass (beyond the ones set aside).
const BATCH: usize = 256;
/// Most failing streams remembered; beyond it the oldest entries are retried at once.
const MAX_SET_ASIDE: usize = 4096;
/// How long a failing stream is skipped before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// The sweeper's memory across passes: streams whose removal failed, and until when they
/// are skipped.
#[derive(Default)]
pub struct Sweeper {
    set_aside: HashMap<String, Instant>,
    /// The last path the retention pass examined (`None`: start over).
    retention_after: Option<String>,
}

/// Sweeps every `streams.sweep_interval_s` until `stop` resolves.
pub async fn run(streams: Streams, stop: impl Future<Output = ()>) {
    let interval = Duration::from_secs(streams.config.sweep_interval_s);
    let mut sweeper = Sweeper::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // A pass stops at shutdown between (or inside) its steps: each step is one engine
        // commit or none, so stopping there is no worse than a crash, and a pass over many
        // streams against an unreachable engine (each step waiting for its connection
        // attempt) would otherwise hold the shutdown for minutes.
        let passes = async {
            if let Err(e) = sweeper.pass(&streams).await {
                tracing::warn!(error = ?e.api, "stream sweep failed; retrying next interval");
            }
            if let Err(e) = sweeper.retention_pass(&streams).await {
                tracing::warn!(error = ?e.api, "retention pass failed; retrying next interval");
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = passes => {}
        }
    }
}

/// One pass with a fresh memory; returns how many candidates were examined.
pub async fn sweep_once(streams: &Streams) -> Result<usize, crate::error::StreamError> {
    Sweeper::default().pass(streams).await
}

impl Sweeper {
    /// One pass over the expired candidates; returns how many were examined. Only listing the
    /// candidates can fail the pass; a failing candidate is logged and skipped.
    pub async fn pass(&mut self, streams: &Streams) -> Result<usize, crate::error::StreamError> {
        let now = Instant::now();
        self.set_aside.retain(|_, until| *until > now);
        let limit = BATCH + self.set_aside.len();
        let candidates = streams.store.expired_streams(now_ms(), limit).await?;
        let mut examined = 0;
        for path in &candidates {
            if self.set_aside.contains_key(path) {
                continue;
            }
            examined += 1;
            if let Err(e) = sweep_one(streams, path).await {
                tracing::warn!(stream = %path, error = ?e.api, "cannot remove an expired stream; skipping it for now");
                ::metrics::counter!("sessiond_streams_sweep_failures_total").increment(1);
                if self.set_aside.len() < MAX_SET_ASIDE {
                    self.set_aside.insert(path.clone(), now + RETRY_AFTER);
                }
            }
        }
        Ok(examined)
    }
}

/// Removes `path` if it really expired (or records its exact deadline if it did not).
async fn sweep_one(streams: &Streams, path: &str) -> StreamResult<()> {
    let mut g = streams.lock(path).await?;
    if let Found::Live = streams.find(&mut g, now_ms()).await? {
        streams.persist_expiry(&mut g).await?;
    }
    Ok(())
}

impl Sweeper {
    /// One retention batch: examines the next `retention_sweep_batch` streams in path order
    /// and trims those whose policy cuts above their start; returns how many were examined.
    pub async fn retention_pass(
        &mut self,
        streams: &Streams,
    ) -> Result<usize, crate::error::StreamError> {
        let batch = streams.config.retention_sweep_batch;
        let paths = streams
            .store
            .list_streams("", self.retention_after.as_deref(), batch)
            .await?;
        self.retention_after = if paths.len() < batch {
            None
        } else {
            paths.last().cloned()
        };
        for path in &paths {
            match streams.retry_stale(|| retain_one(streams, path)).await {
                Ok(()) => {}
                // Lost a race with other nodes (e.g. a fork made meanwhile) every attempt: not
                // a failure, the next pass decides again.
                Err(e) if e.is_stale() => {
                    tracing::debug!(stream = %path, "retention raced other nodes; next pass");
                }
                Err(e) => {
                    tracing::warn!(stream = %path, error = ?e.api, "cannot apply retention; skipping it for now");
                    ::metrics::counter!("sessiond_streams_sweep_failures_total").increment(1);
                }
            }
            if let Err(e) = compact_one(streams, path).await {
                tracing::warn!(stream = %path, error = ?e.api, "cannot compact; skipping it for now");
                ::metrics::counter!("sessiond_streams_sweep_failures_total").increment(1);
            }
        }
        Ok(paths.len())
    }
}

/// Applies `path`'s retention policy, if it has one.
async fn retain_one(streams: &Streams, path: &str) -> StreamResult<()> {
    let now = now_ms();
    let mut g = streams.lock(path).await?;
    let Found::Live = streams.find(&mut g, now).await? else {
        return Ok(());
    };
    let Some(info) = crate::service::stream(&g).map(|s| s.info.clone()) else {
        return Ok(());
    };
    let policy = crate::retention::effective(&streams.config.retention, path, &info);
    if policy.is_empty() {
        return Ok(());
    }
    streams.settle(&mut g).await?;
    if streams.is_written_outside(path) {
        mark_outside_appends(streams, &mut g, info.clone(), now).await?;
    }
    let Some((snap, _)) = Streams::snapshot(&g) else {
        return Ok(());
    };
    let cut = crate::retention::target(streams, &snap, &info, &policy, now).await?;
    if cut <= snap.retained {
        return Ok(());
    }
    let start = streams.trim_locked(&mut g, cut).await?;
    drop(g);
    streams.trim_rest(path, start).await
}

/// A stream the engine appends to itself (`Streams::written_outside`) gets no time marks from
/// those appends, so the pass records one when due (at most one per
/// `retention_mark_interval_s`, as appends do): everything below the tail now was appended
/// before now, which is what a mark says. An age cut is then late by at most a pass interval
/// more than on other streams, never early.
async fn mark_outside_appends(
    streams: &Streams,
    g: &mut crate::service::Guard,
    mut info: crate::state::StreamInfo,
    now: sessiond_store::Millis,
) -> StreamResult<()> {
    let Some(tail) = crate::service::stream(g).map(|s| s.tail) else {
        return Ok(());
    };
    let last = info.marks.last().copied();
    if last.is_some_and(|(_, offset)| offset >= tail) {
        return Ok(());
    }
    let interval = (streams.config.retention_mark_interval_s as i64).saturating_mul(1000);
    crate::retention::mark(&mut info, now, tail, interval);
    if info.marks.last().copied() == last {
        return Ok(());
    }
    streams.commit(g, tail, &[], info, false).await
}

/// Compacts `path` up to its tail once `compaction.trigger_bytes` were appended since its last
/// compaction (streams without compaction are left alone).
async fn compact_one(streams: &Streams, path: &str) -> StreamResult<()> {
    let now = now_ms();
    let tail = {
        let mut g = streams.lock(path).await?;
        let Found::Live = streams.find(&mut g, now).await? else {
            return Ok(());
        };
        let Some(s) = crate::service::stream(&g) else {
            return Ok(());
        };
        let Some(c) = &s.info.compaction else {
            return Ok(());
        };
        if s.tail.saturating_sub(c.ran_at_tail) < streams.config.compaction.trigger_bytes {
            return Ok(());
        }
        s.tail
    };
    streams.compact(path, tail, now).await.map(|_| ())
}
