//! What the capability reports: Prometheus metrics (through the `metrics` facade, rendered
//! on `/metrics`), an optional system stream of metric snapshots, and `Server-Timing` on
//! request (`X-Debug-Timing: 1`).
//!
//! Seed D records one analytics event per append with the stream id. A Prometheus label per
//! stream would make the series count grow with the number of streams (unbounded), so the
//! counters here carry no stream label: appends are counted by kind (`producer` =
//! `idempotent` | `anonymous`) and their sizes go to one histogram. Per-stream figures are
//! what the protocol itself answers (HEAD gives a stream's tail).
//!
//! Metrics:
//! - `sessiond_streams_appends_total{producer}`, `sessiond_streams_append_bytes_total`,
//!   `sessiond_streams_append_bytes` (histogram of body sizes);
//! - `sessiond_streams_live_open{mode}` (gauge: open SSE / waiting long-poll requests),
//!   `sessiond_streams_subscribe_total{mode}`, `sessiond_streams_unsubscribe_total{mode}`;
//! - `sessiond_streams_rejected_total{reason}` (limits that answered 4xx/503);
//! - `sessiond_streams_remote_wakes_total` (tail notifications from other nodes),
//!   `sessiond_streams_commit_retries_total` (commits that lost a race with another node).
//!
//! The system stream (`streams.metrics_stream`, off by default) receives one JSON object per
//! `streams.metrics_interval_s` with the process-wide totals, so the figures can be tailed
//! with the protocol itself (`GET /v1/stream/<name>?offset=-1&live=sse`); its writer is
//! [`crate::metrics_stream`], which appends through the operations. The counters here import
//! nothing of the crate: every layer, down to the wake channels, records into them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;

static APPENDS: AtomicU64 = AtomicU64::new(0);
static APPEND_BYTES: AtomicU64 = AtomicU64::new(0);
static SSE_OPEN: AtomicI64 = AtomicI64::new(0);
static LONG_POLLS: AtomicI64 = AtomicI64::new(0);
static SUBSCRIBES: AtomicU64 = AtomicU64::new(0);
static REJECTED: AtomicU64 = AtomicU64::new(0);

/// The per-append series, looked up in the recorder once: each `counter!` looks its key up
/// in the recorder (hashing it), which cost ~2.4 k instructions per append for these three.
/// The server installs its recorder before it wires the capabilities
/// (`sessiond::Server::wire`), so no append can come first and cache handles of no recorder.
struct AppendSeries {
    anonymous: ::metrics::Counter,
    idempotent: ::metrics::Counter,
    bytes: ::metrics::Counter,
    sizes: ::metrics::Histogram,
}

fn append_series() -> &'static AppendSeries {
    static SERIES: std::sync::OnceLock<AppendSeries> = std::sync::OnceLock::new();
    SERIES.get_or_init(|| AppendSeries {
        anonymous: ::metrics::counter!("sessiond_streams_appends_total", "producer" => "anonymous"),
        idempotent: ::metrics::counter!("sessiond_streams_appends_total", "producer" => "idempotent"),
        bytes: ::metrics::counter!("sessiond_streams_append_bytes_total"),
        sizes: ::metrics::histogram!("sessiond_streams_append_bytes"),
    })
}

/// Records one accepted append of `bytes` body bytes.
pub fn appended(bytes: usize, idempotent: bool) {
    let series = append_series();
    let appends = if idempotent {
        &series.idempotent
    } else {
        &series.anonymous
    };
    appends.increment(1);
    series.bytes.increment(bytes as u64);
    series.sizes.record(bytes as f64);
    APPENDS.fetch_add(1, Ordering::Relaxed);
    APPEND_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// A tail notification from another node arrived.
pub fn remote_wake() {
    ::metrics::counter!("sessiond_streams_remote_wakes_total").increment(1);
}

/// Chunks dropped by a trim (explicit `Stream-Trim-Before` or a retention policy).
pub fn trimmed(chunks: usize) {
    ::metrics::counter!("sessiond_streams_trimmed_chunks_total").increment(chunks as u64);
}

/// Chunks dropped by keyed compaction.
pub fn compacted(chunks: usize) {
    ::metrics::counter!("sessiond_streams_compacted_chunks_total").increment(chunks as u64);
}

/// A commit lost a race with another node and was decided again.
pub fn commit_retry() {
    ::metrics::counter!("sessiond_streams_commit_retries_total").increment(1);
}

/// A live reader (`mode` = `sse` | `long_poll`) started (`true`) or ended.
pub fn live(mode: &'static str, opened: bool) {
    let gauge = if mode == "sse" {
        &SSE_OPEN
    } else {
        &LONG_POLLS
    };
    if opened {
        gauge.fetch_add(1, Ordering::Relaxed);
        SUBSCRIBES.fetch_add(1, Ordering::Relaxed);
        ::metrics::gauge!("sessiond_streams_live_open", "mode" => mode).increment(1.0);
        ::metrics::counter!("sessiond_streams_subscribe_total", "mode" => mode).increment(1);
    } else {
        gauge.fetch_sub(1, Ordering::Relaxed);
        ::metrics::gauge!("sessiond_streams_live_open", "mode" => mode).decrement(1.0);
        ::metrics::counter!("sessiond_streams_unsubscribe_total", "mode" => mode).increment(1);
    }
}

/// A request refused by a limit (`reason` is a fixed word).
pub fn rejected(reason: &'static str) {
    REJECTED.fetch_add(1, Ordering::Relaxed);
    ::metrics::counter!("sessiond_streams_rejected_total", "reason" => reason).increment(1);
}

/// With `X-Debug-Timing: 1`, adds `Server-Timing: app;dur=<ms>` (time spent in the streams
/// handler; for SSE, until the response headers): a middleware step
/// (`step::layer(DebugTiming)`).
pub struct DebugTiming;

impl sessiond_http::step::Step for DebugTiming {
    type Seen = Option<Instant>;

    fn before(&self, request: &mut Request) -> (Option<Instant>, Option<Response>) {
        let wanted = request
            .headers()
            .get("x-debug-timing")
            .is_some_and(|v| v.as_bytes() == b"1");
        (wanted.then(Instant::now), None)
    }

    fn after(&self, started: Option<Instant>, mut response: Response) -> Response {
        let Some(started) = started else {
            return response;
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Ok(v) = HeaderValue::from_str(&format!("app;desc=\"sessiond\";dur={ms:.3}")) {
            response.headers_mut().append("server-timing", v);
        }
        response
    }
}

/// The snapshot appended to the system stream.
pub(crate) fn snapshot() -> serde_json::Value {
    serde_json::json!({
        "ts": sessiond_store::now_ms(),
        "appends": APPENDS.load(Ordering::Relaxed),
        "append_bytes": APPEND_BYTES.load(Ordering::Relaxed),
        "sse_open": SSE_OPEN.load(Ordering::Relaxed),
        "long_polls_open": LONG_POLLS.load(Ordering::Relaxed),
        "subscribes": SUBSCRIBES.load(Ordering::Relaxed),
        "rejected": REJECTED.load(Ordering::Relaxed),
    })
}
