//! The listener's limits (`[http]`), and hyper's HTTP/1 server configured with them.
//!
//! `header_read_timeout` is off in hyper: the listener's watchdog enforces the head timeout
//! (see the listener's module docs).

use std::time::Duration;

use crate::config::HttpConfig;

/// The listener's limits, from `[http]`.
#[derive(Clone, Debug)]
pub struct Limits {
    pub(super) header_timeout: Duration,
    pub(super) body_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) handshake_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) max_connections_per_ip: usize,
    pub(super) max_headers: usize,
    pub(super) max_header_bytes: usize,
    pub(super) linger_max_bytes: usize,
    pub(super) linger_timeout: Duration,
    pub(super) live_read_threads: usize,
    pub(super) live_read_nice: u8,
}

/// hyper's header cap when none is set (the `hostile_clients` test `default_header_cap_is_100`
/// notices if a hyper release changes it).
const HYPER_MAX_HEADERS: usize = 100;

impl Limits {
    /// The limits configured in `[http]`.
    pub fn from_config(http: &HttpConfig) -> Limits {
        Limits {
            header_timeout: Duration::from_millis(http.header_timeout_ms),
            body_timeout: Duration::from_millis(http.body_timeout_ms),
            idle_timeout: Duration::from_millis(http.idle_timeout_ms),
            handshake_timeout: Duration::from_millis(http.websocket_handshake_timeout_ms),
            max_connections: http.max_connections,
            max_connections_per_ip: http.max_connections_per_ip,
            max_headers: http.max_headers,
            max_header_bytes: http.max_header_bytes,
            linger_max_bytes: http.linger_max_bytes,
            linger_timeout: Duration::from_millis(http.linger_timeout_ms),
            live_read_threads: http
                .live_read_threads
                .unwrap_or_else(super::placement::default_threads),
            live_read_nice: http.live_read_nice,
        }
    }

    /// How often a connection's watchdog looks at its phase: a quarter of the shortest
    /// timeout, so a timeout is enforced at most 25% late.
    pub(super) fn tick(&self) -> Duration {
        let shortest = [
            self.header_timeout,
            self.idle_timeout,
            self.handshake_timeout,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(1));
        (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    /// hyper's HTTP/1 server for one connection, with the header caps. A cap equal to hyper's
    /// own default is left to hyper: set explicitly, hyper fills its two per-request header
    /// tables element by element on every request (≈ 1.7 k instructions, 4 % of a session
    /// GET), while its default is a constant, inline initialisation.
    pub(super) fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .keep_alive(true)
            .header_read_timeout(None)
            .max_header_size(self.max_header_bytes);
        if self.max_headers != HYPER_MAX_HEADERS {
            builder.max_headers(self.max_headers);
        }
        builder
    }
}
