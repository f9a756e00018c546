//! Wiring of the middleware capability: which analytics sink it gets, and the task that
//! drains the channel sink into the system Durable Stream.
//!
//! The capability does not depend on the streams capability; the server, which owns both,
//! connects them here. Data points are appended in batches, so a burst of decisions costs one
//! stream commit, not one each; each point is serialized once, here, off the request path,
//! and handed to the stream as a ready JSON message (no JSON array parsed back).

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use sessiond_middleware::{
    AnalyticsSink, AnalyticsTarget, ChannelSink, DataPoint, FileSink, NoSink,
};
use tokio::sync::mpsc::Receiver;

use crate::config::Config;

/// Most data points appended in one batch.
const BATCH: usize = 512;

/// A sink, and the receiver to drain into the system stream when it is the stream sink.
pub type SinkParts = (Arc<dyn AnalyticsSink>, Option<Receiver<DataPoint>>);

/// The sink the configuration asks for.
pub fn sink(config: &Config, streams_available: bool) -> anyhow::Result<SinkParts> {
    let analytics = &config.middleware.analytics;
    if !config.middleware.enabled {
        return Ok((Arc::new(NoSink), None));
    }
    match analytics.sink {
        AnalyticsTarget::Off => Ok((Arc::new(NoSink), None)),
        AnalyticsTarget::File => {
            let path = config.data_dir.join(&analytics.file);
            let sink = FileSink::open(&path, analytics.buffer).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open middleware.analytics.file {}: {e}",
                    path.display()
                )
            })?;
            Ok((Arc::new(sink), None))
        }
        AnalyticsTarget::Stream if !streams_available => {
            tracing::warn!(
                "middleware analytics go nowhere: this engine stores no streams (set \
                 middleware.analytics.sink = \"file\" or \"off\")"
            );
            Ok((Arc::new(NoSink), None))
        }
        AnalyticsTarget::Stream => {
            let (sink, rx) = ChannelSink::new(analytics.buffer);
            Ok((Arc::new(sink), Some(rx)))
        }
    }
}

/// Appends data points from `rx` to the JSON stream `name` until `stop` (then drains what is
/// queued). The stream is created when missing.
pub async fn run_stream_sink(
    streams: sessiond_streams::Streams,
    name: String,
    mut rx: Receiver<DataPoint>,
    stop: impl Future<Output = ()>,
) {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    let mut created = false;
    tokio::pin!(stop);
    let mut stopping = false;
    loop {
        let first = if stopping {
            match rx.try_recv() {
                Ok(p) => p,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                p = rx.recv() => match p { Some(p) => p, None => return },
                _ = &mut stop => { stopping = true; continue; }
            }
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let values: Vec<Vec<u8>> = batch
            .iter()
            .filter_map(|point| serde_json::to_vec(point).ok())
            .collect();
        if values.is_empty() {
            continue;
        }
        if !created {
            let made =
                sessiond_streams::create::create(&streams, &name, &h, Bytes::new(), "/").await;
            match made {
                Ok(_) => created = true,
                Err(e) => {
                    tracing::warn!(stream = %name, error = ?e.api, "cannot create the middleware analytics stream");
                    continue;
                }
            }
        }
        if let Err(e) =
            sessiond_streams::append::append_json_values(&streams, &name, &h, values).await
        {
            tracing::warn!(stream = %name, error = ?e.api, dropped = batch.len(), "cannot append middleware analytics");
            created = false;
        }
    }
}
