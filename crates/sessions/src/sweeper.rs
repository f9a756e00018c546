//! The expiry sweeper: deletes expired sessions and cache entries in bounded batches.
//!
//! Reads already hide expired rows, so the sweeper is about space, not correctness: it runs
//! every `sweep_interval_s`, deletes `sweep_batch` rows per call, and keeps going while full
//! batches come back, so a backlog drains without one huge transaction blocking the writer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sessiond_store::{now_ms, CacheStore, SessionStore};

use crate::config::SessionsConfig;

/// Runs until `shutdown` resolves.
pub async fn run(
    sessions: Arc<dyn SessionStore>,
    cache: Arc<dyn CacheStore>,
    config: Arc<SessionsConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.sweep_interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let removed = sweep_once(&*sessions, &*cache, config.sweep_batch).await;
        if removed > 0 {
            tracing::debug!(removed, "swept expired rows");
        }
    }
}

/// One full sweep pass; returns how many rows went. Errors are logged, never fatal.
pub async fn sweep_once(
    sessions: &dyn SessionStore,
    cache: &dyn CacheStore,
    batch: usize,
) -> usize {
    let mut total = 0;
    loop {
        let now = now_ms();
        let s = sessions.sweep_sessions(now, batch).await;
        let c = cache.sweep_cache(now, batch).await;
        let (s, c) = match (s, c) {
            (Ok(s), Ok(c)) => (s, c),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "expiry sweep failed; will retry next interval");
                return total;
            }
        };
        metrics::counter!("sessiond_swept_total", "what" => "sessions").increment(s as u64);
        metrics::counter!("sessiond_swept_total", "what" => "cache").increment(c as u64);
        total += s + c;
        if s < batch && c < batch {
            return total;
        }
        tokio::task::yield_now().await;
    }
}
