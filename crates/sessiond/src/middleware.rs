//! Wiring of the middleware capability: its decider, which analytics sink it gets, and the
//! task that drains the channel sink into the system Durable Stream.
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
    AnalyticsSink, AnalyticsTarget, ChannelReceiver, ChannelSink, Decider, FileSink, NoSink,
};
use sessiond_runtime::RuntimeBuilder;
use sessiond_streams::Streams;

use crate::config::Config;
use crate::supervisor::Task;
use crate::Wiring;

/// Most data points appended in one batch.
const BATCH: usize = 512;

/// A sink, and the receiver to drain into the system stream when it is the stream sink.
pub type SinkParts = (Arc<dyn AnalyticsSink>, Option<ChannelReceiver>);

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
            let (sink, rx) = ChannelSink::new(analytics.buffer, BATCH);
            Ok((Arc::new(sink), Some(rx)))
        }
    }
}

/// The session middleware as the server serves it.
pub struct Wired {
    /// The decider behind its routes (also the realtime hub's cookie check).
    pub decider: Option<Decider>,
    /// The analytics stream writer, when data points go to a stream.
    pub tasks: Vec<Task>,
}

/// Builds the middleware when enabled: one object per client with a TTL alarm each, and
/// analytics to the configured sink.
pub fn wire(
    wiring: &Wiring<'_>,
    runtime: &mut RuntimeBuilder,
    streams: Option<&Streams>,
) -> anyhow::Result<Wired> {
    let config = wiring.config;
    if !config.middleware.enabled {
        return Ok(Wired {
            decider: None,
            tasks: Vec::new(),
        });
    }
    let (analytics_sink, analytics_rx) = sink(config, streams.is_some())?;
    let decider = Decider::new(
        config.middleware.clone(),
        runtime,
        wiring.stores.objects.clone(),
        wiring.stores.admin.exclusive(),
        analytics_sink,
    )
    .map_err(anyhow::Error::msg)?;
    let tasks = streams
        .cloned()
        .zip(analytics_rx)
        .map(|(streams, rx)| {
            Task::new(
                "middleware-analytics-stream",
                run_stream_sink(
                    streams,
                    config.middleware.analytics.stream.clone(),
                    std::time::Duration::from_millis(config.middleware.analytics.flush_ms),
                    rx,
                    wiring.supervisor.stopped(),
                ),
            )
        })
        .into_iter()
        .collect();
    Ok(Wired {
        decider: Some(decider),
        tasks,
    })
}

/// Appends data points from `rx` to the JSON stream `name` until `stop` (then drains what is
/// queued). The stream is created when missing. After the first point of a batch it waits
/// for `flush` or until `BATCH` points are queued, whichever comes first, and then takes
/// what is queued: a busy server makes one durable append per interval (or per full batch)
/// and wakes this task once per batch, not once per point.
pub async fn run_stream_sink(
    streams: sessiond_streams::Streams,
    name: String,
    flush: std::time::Duration,
    mut rx: ChannelReceiver,
    stop: impl Future<Output = ()>,
) {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    let mut created = false;
    tokio::pin!(stop);
    let mut stopping = false;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        if stopping {
            rx.drain(&mut batch, BATCH);
            if batch.is_empty() {
                return;
            }
        } else {
            tokio::select! {
                p = rx.recv() => match p { Some(p) => batch.push(p), None => return },
                _ = &mut stop => { stopping = true; continue; }
            }
            rx.drain(&mut batch, BATCH);
            if batch.len() < BATCH && !flush.is_zero() {
                let until = tokio::time::Instant::now() + flush;
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = rx.batch_queued() => {}
                    _ = &mut stop => stopping = true,
                }
                rx.drain(&mut batch, BATCH);
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
