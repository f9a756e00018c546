//! The system metrics stream (`streams.metrics_stream`): a task that appends the totals of
//! [`crate::metrics`] as one JSON message per interval, through the protocol's own create
//! and append. It sits above the operations it calls, apart from the counters, which every
//! layer records into.

use std::future::Future;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};

use crate::service::Streams;

/// Appends a snapshot to `streams.metrics_stream` every `metrics_interval_s` until `stop`
/// (nothing when no stream is configured). The stream is created as a JSON stream when
/// missing (its own appends count as appends: one per interval).
pub async fn run_system_stream(streams: Streams, stop: impl Future<Output = ()>) {
    let Some(path) = streams.config.metrics_stream.clone() else {
        return;
    };
    let interval = Duration::from_secs(streams.config.metrics_interval_s.max(1));
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let body = Bytes::from(crate::metrics::snapshot().to_string());
        let exists = crate::create::create(&streams, &path, &h, Bytes::new(), "/").await;
        let result = match exists {
            Ok(_) => crate::append::append(&streams, &path, &h, body).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(stream = %path, error = ?e.api, "cannot append to the metrics stream");
        }
    }
}
