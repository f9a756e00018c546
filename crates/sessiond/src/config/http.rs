//! The `[http]` and `[log]` sections: how the listener treats clients and what it logs.

use super::*;

/// Logging.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `sessiond=debug,info` (`RUST_LOG` wins if set).
    pub level: String,
    /// One line per request (target `sessiond::access`, info). Off: only 401/403 are logged.
    pub access: bool,
    /// Access lines written to stderr together every this many milliseconds (at most 10,000;
    /// 0: one write per line). A `kill -9` loses at most this window's lines; a clean stop
    /// writes them.
    pub access_flush_ms: u64,
}

/// Longest `log.access_flush_ms` (10 s): beyond it a tail of the log lags too far behind.
pub const MAX_ACCESS_FLUSH_MS: u64 = 10_000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
            access: true,
            access_flush_ms: 100,
        }
    }
}

/// HTTP server settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body (bytes); larger is a 413.
    pub max_body_bytes: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish (seconds).
    pub shutdown_grace_s: u64,
    /// Open mode only: `Host` names served besides `localhost`, `127.0.0.1` and `[::1]`
    /// (any other Host is a 403, against DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Open mode only: page origins allowed besides loopback ones (`http://localhost:5173`
    /// style, exact match); any other `Origin` is a 403.
    pub allowed_origins: Vec<String>,
    /// Proxies (CIDR) whose `X-Forwarded-For` / `Forwarded` name the client in the access
    /// log; empty = the log shows the TCP peer only.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Time a client has to send a whole request head, from its first byte (ms); past it the
    /// connection is closed (slowloris).
    pub header_timeout_ms: u64,
    /// Time a request body has to arrive, from the handler's first read (ms); past it a 408.
    pub body_timeout_ms: u64,
    /// Idle keep-alive connections are closed after this long without a request (ms).
    pub idle_timeout_ms: u64,
    /// Time from a WebSocket upgrade request's first byte until the socket is open (ms).
    pub websocket_handshake_timeout_ms: u64,
    /// Most open connections (WebSockets included); past it a 503 and close. 0 = no cap.
    pub max_connections: usize,
    /// Most open connections from one IP address; past it a 503 and close. 0 = no cap (the
    /// default: behind a reverse proxy every connection comes from the proxy's address).
    pub max_connections_per_ip: usize,
    /// Most header lines in a request (past it a 431).
    pub max_headers: usize,
    /// Largest request head in bytes, request line included (past it a 431).
    pub max_header_bytes: usize,
    /// After an answer that leaves a request body unread (a 413), up to this many bytes the
    /// client still sends are read and dropped before the socket closes, so the client reads
    /// the answer instead of a connection reset.
    pub linger_max_bytes: usize,
    /// The longest such a lingering close waits for the client (ms).
    pub linger_timeout_ms: u64,
    /// Threads that serve Durable Streams live reads (`live=sse`, `live=long-poll`), apart
    /// from the threads that serve writes, so that a fan-out to many readers never holds an
    /// append back. Unset: half the cores, at least one; 0: live reads share the other threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_read_threads: Option<usize>,
    /// How many nice steps (0–19) the live-read threads run below the rest of the server
    /// (Linux), so that on saturated cores requests and appends go first and live readers
    /// catch up with several appends per event. 0: the same priority.
    pub live_read_nice: u8,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 1024 * 1024,
            shutdown_grace_s: 30,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            header_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            idle_timeout_ms: 75_000,
            websocket_handshake_timeout_ms: 10_000,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            linger_max_bytes: 16 * 1024 * 1024,
            linger_timeout_ms: 5_000,
            live_read_threads: None,
            live_read_nice: 10,
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        for (key, value) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            (
                "websocket_handshake_timeout_ms",
                self.websocket_handshake_timeout_ms,
            ),
            ("linger_timeout_ms", self.linger_timeout_ms),
            ("max_headers", self.max_headers as u64),
        ] {
            if value == 0 {
                anyhow::bail!("http.{key} must be > 0");
            }
        }
        if self.live_read_nice > 19 {
            anyhow::bail!("http.live_read_nice must be 0–19");
        }
        if self.max_header_bytes < 1024 {
            anyhow::bail!("http.max_header_bytes must be at least 1024");
        }
        Ok(())
    }
}
