//! Analytics: seed A's three datasets (events on every decision, sessions on new sessions,
//! clients on new clients), written to a pluggable sink.
//!
//! A sent them to Workers Analytics Engine. Here a sink is anything implementing
//! [`AnalyticsSink`]; the capability ships two that need no engine:
//! - [`FileSink`]: JSON lines appended to a local file by a writer thread;
//! - [`ChannelSink`]: a bounded channel whose receiver the server drains into its system
//!   Durable Stream (the server owns the streams capability; this crate never names it).
//!
//! Recording never blocks or fails a decision: sinks buffer up to a bound and drop (and count)
//! beyond it. Sampling is one draw per decision, so a sampled decision appears in every dataset
//! it belongs to and an unsampled one in none.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use serde::Serialize;
use sessiond_store::Millis;
use tokio::sync::Notify;

/// The three datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    /// Every decision.
    Events,
    /// Decisions that started a session.
    Sessions,
    /// Decisions that created a client.
    Clients,
}

/// One data point (seed A §A.7's fields, by name instead of blob/double slots).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataPoint {
    /// Which dataset.
    pub dataset: Dataset,
    /// When (unix ms).
    pub ts: Millis,
    /// Client id.
    #[serde(rename = "cID")]
    pub cid: String,
    /// Session id.
    #[serde(rename = "sID")]
    pub sid: String,
    /// Event id.
    #[serde(rename = "eID")]
    pub eid: String,
    /// Fingerprint id.
    #[serde(rename = "fpID")]
    pub fp_id: Option<String>,
    /// Region or point of presence.
    pub region: Option<String>,
    /// URL host.
    pub host: Option<String>,
    /// URL path.
    pub path: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// `Accept` header.
    pub accept: Option<String>,
    /// New client.
    #[serde(rename = "isNewClient")]
    pub is_new_client: bool,
    /// New fingerprint.
    #[serde(rename = "isNewFpID")]
    pub is_new_fp_id: bool,
    /// New session.
    #[serde(rename = "isNewSession")]
    pub is_new_session: bool,
    /// Fallback decision.
    #[serde(rename = "isFallback")]
    pub is_fallback: bool,
}

/// Where data points go. Must return at once (buffer, never wait on I/O).
pub trait AnalyticsSink: Send + Sync {
    /// Records one data point.
    fn record(&self, point: DataPoint);
}

/// Records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSink;

impl AnalyticsSink for NoSink {
    fn record(&self, _point: DataPoint) {}
}

fn dropped() {
    metrics::counter!("sessiond_middleware_analytics_dropped_total").increment(1);
}

/// A bounded channel of data points; the receiver is drained by whoever owns the destination.
///
/// The drain does not wake per point: it waits for its flush interval, or for the signal
/// that a whole batch is queued ([`ChannelReceiver::batch_queued`]), and then takes what is
/// there. A wake-up per point (a task scheduled, a timer armed and dropped, often another
/// worker thread unparked) cost more CPU than the point itself.
#[derive(Clone, Debug)]
pub struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<DataPoint>,
    full: Arc<Notify>,
    batch: usize,
}

/// The receiving end of a [`ChannelSink`].
#[derive(Debug)]
pub struct ChannelReceiver {
    rx: tokio::sync::mpsc::Receiver<DataPoint>,
    full: Arc<Notify>,
}

impl ChannelSink {
    /// A sink holding up to `buffer` points, and its receiver, which is told each time
    /// another `batch` points are queued.
    pub fn new(buffer: usize, batch: usize) -> (Self, ChannelReceiver) {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
        let full = Arc::new(Notify::new());
        let sink = ChannelSink {
            tx,
            full: full.clone(),
            batch: batch.max(1),
        };
        (sink, ChannelReceiver { rx, full })
    }
}

impl AnalyticsSink for ChannelSink {
    fn record(&self, point: DataPoint) {
        if self.tx.try_send(point).is_err() {
            dropped();
            return;
        }
        let queued = self.tx.max_capacity() - self.tx.capacity();
        if queued.is_multiple_of(self.batch) {
            self.full.notify_one();
        }
    }
}

impl ChannelReceiver {
    /// The next point; `None` once every sink is dropped and the queue is empty.
    pub async fn recv(&mut self) -> Option<DataPoint> {
        self.rx.recv().await
    }

    /// Moves queued points into `into` until it holds `limit`, without waiting.
    pub fn drain(&mut self, into: &mut Vec<DataPoint>, limit: usize) {
        while into.len() < limit {
            match self.rx.try_recv() {
                Ok(point) => into.push(point),
                Err(_) => return,
            }
        }
    }

    /// Resolves when a batch has been queued since the last call returned (at once if that
    /// happened while nobody waited).
    pub async fn batch_queued(&self) {
        self.full.notified().await;
    }
}

/// Appends JSON lines to a file from a dedicated thread.
#[derive(Debug)]
pub struct FileSink {
    tx: SyncSender<String>,
}

impl FileSink {
    /// Opens (creates) `path` for appending and starts the writer thread.
    pub fn open(path: impl Into<PathBuf>, buffer: usize) -> std::io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let (tx, rx) = sync_channel::<String>(buffer.max(1));
        std::thread::Builder::new()
            .name("mw-analytics".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Ok(line) = rx.recv() {
                    let mut result = writeln!(out, "{line}");
                    // Drain what is queued, then flush once: one write per burst.
                    while let Ok(more) = rx.try_recv() {
                        result = result.and_then(|()| writeln!(out, "{more}"));
                    }
                    if let Err(e) = result.and_then(|()| out.flush()) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write analytics");
                    }
                }
            })?;
        Ok(FileSink { tx })
    }
}

impl AnalyticsSink for FileSink {
    fn record(&self, point: DataPoint) {
        let Ok(line) = serde_json::to_string(&point) else {
            return;
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => dropped(),
        }
    }
}

/// Whether a decision is sampled at `rate` (0.0–1.0).
pub fn sampled(rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let mut bytes = [0u8; 8];
    crate::ids::fill_random(&mut bytes);
    // 53 random bits give a uniform float in [0, 1).
    let draw = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    draw < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(dataset: Dataset) -> DataPoint {
        DataPoint {
            dataset,
            ts: 1,
            cid: "c".into(),
            sid: "s".into(),
            eid: "e".into(),
            fp_id: None,
            region: None,
            host: None,
            path: Some("/x".into()),
            method: None,
            accept: None,
            is_new_client: true,
            is_new_fp_id: false,
            is_new_session: true,
            is_fallback: false,
        }
    }

    #[test]
    fn file_sink_appends_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/a.jsonl");
        let sink = FileSink::open(&path, 16).expect("open");
        sink.record(point(Dataset::Events));
        sink.record(point(Dataset::Clients));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 {
                let first: serde_json::Value =
                    serde_json::from_str(text.lines().next().unwrap_or("")).expect("json");
                assert_eq!(first["dataset"], "events");
                assert_eq!(first["cID"], "c");
                assert_eq!(first["path"], "/x");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lines never written: {text:?}"
            );
            std::thread::yield_now();
        }
    }

    #[tokio::test]
    async fn channel_sink_signals_each_full_batch_and_drains_without_waiting() {
        let (sink, mut rx) = ChannelSink::new(16, 3);
        let signalled = |rx: &ChannelReceiver| ready_now(rx.batch_queued());
        sink.record(point(Dataset::Events));
        sink.record(point(Dataset::Events));
        assert!(!signalled(&rx), "two of three queued: no signal yet");
        sink.record(point(Dataset::Sessions));
        assert!(signalled(&rx), "a full batch is signalled");
        let mut batch = Vec::new();
        rx.drain(&mut batch, 2);
        assert_eq!(batch.len(), 2, "drain stops at its limit");
        rx.drain(&mut batch, 10);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[2].dataset, Dataset::Sessions, "in order");
        assert!(!signalled(&rx), "the signal was used up");
    }

    /// Whether `future` is ready at its first poll.
    fn ready_now(future: impl std::future::Future<Output = ()>) -> bool {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        future.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn sampling_bounds() {
        assert!(sampled(1.0));
        assert!(!sampled(0.0));
        let hits = (0..2000).filter(|_| sampled(0.5)).count();
        assert!((700..1300).contains(&hits), "{hits}");
    }
}
