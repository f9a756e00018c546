//! Background removal of expired streams.
//!
//! Expiry is enforced lazily on every access; the sweeper only reclaims space of streams
//! nobody touches. The engine indexes `StreamMeta::expires_at`, which may lag the exact
//! in-memory deadline of a sliding TTL (refreshes are persisted lazily), so every candidate is
//! re-checked under its lock with the authoritative state before anything is deleted.

use std::future::Future;
use std::time::Duration;

use sessiond_store::now_ms;

use crate::service::{Found, Streams};

/// Sweeps every `streams.sweep_interval_s` until `stop` resolves.
pub async fn run(streams: Streams, stop: impl Future<Output = ()>) {
    let interval = Duration::from_secs(streams.config.sweep_interval_s);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = sweep_once(&streams).await {
            tracing::warn!(error = ?e.api, "stream sweep failed; retrying next interval");
        }
    }
}

/// One pass over the expired candidates; returns how many were examined.
pub async fn sweep_once(streams: &Streams) -> Result<usize, crate::error::StreamError> {
    let candidates = streams.store.expired_streams(now_ms(), 256).await?;
    for path in &candidates {
        let mut g = streams.lock(path).await?;
        if let Found::Live = streams.find(&mut g, now_ms()).await? {
            streams.persist_expiry(&mut g).await?;
        }
    }
    Ok(candidates.len())
}
