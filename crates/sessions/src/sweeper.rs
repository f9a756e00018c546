//! The expiry sweeper: deletes expired sessions and cache entries in bounded batches.
//!
//! Reads already hide expired rows, so the sweeper is about space, not correctness: it runs
//! every `sweep_interval_s`, deletes `sweep_batch` rows per call, and keeps going while full
//! batches come back, so a backlog drains without one huge transaction blocking the writer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sessiond_store::{now_ms, CacheStore, EventFor, SessionStore};

use crate::config::SessionsConfig;
use crate::security::{details, SecurityEvents};

/// Runs until `shutdown` resolves. With `security`, each swept session's `session.expired`
/// event is queued in the sweep's own transaction or script, on every engine (see
/// `SessionStore::sweep_sessions_with`): at most `sweep_interval_s` after the deadline.
pub async fn run(
    sessions: Arc<dyn SessionStore>,
    cache: Arc<dyn CacheStore>,
    config: Arc<SessionsConfig>,
    security: Option<SecurityEvents>,
    shutdown: impl Future<Output = ()>,
) {
    let events = security.as_ref().map(expired_events);
    let mut tick = tokio::time::interval(Duration::from_secs(config.sweep_interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let removed = sweep_once(&*sessions, &*cache, config.sweep_batch, events.clone()).await;
        if removed > 0 {
            if let Some(security) = &security {
                security.notify();
            }
            tracing::debug!(removed, "swept expired rows");
        }
    }
}

/// One full sweep pass; returns how many rows went. Errors are logged, never fatal, and a
/// failing table does not stop the other one from being swept.
pub async fn sweep_once(
    sessions: &dyn SessionStore,
    cache: &dyn CacheStore,
    batch: usize,
    events: Option<EventFor>,
) -> usize {
    let (mut sessions_done, mut cache_done) = (false, false);
    let mut total = 0;
    while !(sessions_done && cache_done) {
        let now = now_ms();
        if !sessions_done {
            let removed = swept(
                "sessions",
                sessions
                    .sweep_sessions_with(now, batch, events.clone())
                    .await,
            );
            sessions_done = removed < batch;
            total += removed;
        }
        if !cache_done {
            let removed = swept("cache", cache.sweep_cache(now, batch).await);
            cache_done = removed < batch;
            total += removed;
        }
        tokio::task::yield_now().await;
    }
    total
}

/// `session.expired` for a swept record: `idle` when the idle deadline came first.
pub fn expired_events(security: &SecurityEvents) -> EventFor {
    security.for_each("session.expired", |r| {
        let reason = match r.idle_expires_at < r.absolute_expires_at {
            true => "idle",
            false => "absolute",
        };
        details([
            ("reason", reason.into()),
            ("expired_at", r.expires_at().into()),
        ])
    })
}

/// Counts one batch's removals; a failed batch is logged and counts as 0 (ending that table's
/// part of the pass).
fn swept(what: &'static str, result: sessiond_store::Result<usize>) -> usize {
    match result {
        Ok(n) => {
            metrics::counter!("sessiond_swept_total", "what" => what).increment(n as u64);
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, what, "expiry sweep failed; will retry next interval");
            0
        }
    }
}
