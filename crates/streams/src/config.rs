//! Limits and timings of the streams capability (the `[streams]` section of sessiond's config).
//!
//! Every limit answers with a clear 4xx (or 503 with `Retry-After` for connection caps) rather
//! than degrading silently: a client that hits one learns which knob to ask for.

use serde::{Deserialize, Serialize};

/// Streams settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// How long a long-poll read waits at the tail before answering 204 (milliseconds). The
    /// conformance suite runs with 500.
    pub long_poll_timeout_ms: u64,
    /// Largest body of one catch-up page (bytes). JSON pages are cut on value boundaries, so
    /// a single larger value is still sent whole.
    pub max_read_chunk_bytes: usize,
    /// Largest append or create body (bytes); larger is a 413.
    pub max_append_bytes: usize,
    /// Longest stream name (bytes of the path after `/v1/stream/`); longer is a 400.
    pub max_name_bytes: usize,
    /// Most concurrently open SSE connections; beyond it new ones get 503 + `Retry-After`.
    pub max_sse_connections: usize,
    /// Most concurrently waiting long-poll requests; beyond it new ones get 503.
    pub max_long_polls: usize,
    /// An SSE connection is closed after this long (seconds) so CDNs can collapse
    /// reconnections; clients resume from the last offset.
    pub sse_reconnect_s: u64,
    /// How often the sweeper looks for expired streams (seconds).
    pub sweep_interval_s: u64,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            long_poll_timeout_ms: 20_000,
            max_read_chunk_bytes: 4 * 1024 * 1024,
            max_append_bytes: 16 * 1024 * 1024,
            max_name_bytes: 1024,
            max_sse_connections: 10_000,
            max_long_polls: 10_000,
            sse_reconnect_s: 60,
            sweep_interval_s: 30,
        }
    }
}

impl StreamsConfig {
    /// Checks the values; the message names the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.long_poll_timeout_ms == 0 {
            return Err("streams.long_poll_timeout_ms must be > 0".into());
        }
        if self.max_read_chunk_bytes == 0 || self.max_append_bytes == 0 {
            return Err(
                "streams.max_read_chunk_bytes and streams.max_append_bytes must be > 0".into(),
            );
        }
        if self.max_name_bytes == 0 || self.sse_reconnect_s == 0 || self.sweep_interval_s == 0 {
            return Err(
                "streams.max_name_bytes, streams.sse_reconnect_s and streams.sweep_interval_s must be > 0"
                    .into(),
            );
        }
        Ok(())
    }
}
