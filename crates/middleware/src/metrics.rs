//! Prometheus counters of the capability. No label names a client: the series count stays
//! fixed however many browsers come by.
//!
//! - `sessiond_middleware_decisions_total`: every decision, fallbacks included;
//! - `sessiond_middleware_new_clients_total`, `sessiond_middleware_new_sessions_total`;
//! - `sessiond_middleware_fallbacks_total`: answered without the engine;
//! - `sessiond_middleware_rehydrations_total`: state restored from a signed cookie;
//! - `sessiond_middleware_rate_limited_total`: decisions refused with 429;
//! - `sessiond_middleware_clients_expired_total`: client states deleted after `client_ttl_s`;
//! - `sessiond_middleware_analytics_dropped_total`: data points a full sink buffer dropped.
//!
//! Handles are registered once per [`Decider`](crate::Decider), so a decision costs an
//! atomic add per counter, not a registry lookup.

use metrics::Counter;

/// The counters, registered with the recorder installed at construction.
#[derive(Clone)]
pub struct Metrics {
    pub(crate) decisions: Counter,
    pub(crate) new_clients: Counter,
    pub(crate) new_sessions: Counter,
    pub(crate) fallbacks: Counter,
    pub(crate) rehydrations: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) expired: Counter,
}

impl Metrics {
    /// Registers every counter.
    pub fn register() -> Self {
        Metrics {
            decisions: metrics::counter!("sessiond_middleware_decisions_total"),
            new_clients: metrics::counter!("sessiond_middleware_new_clients_total"),
            new_sessions: metrics::counter!("sessiond_middleware_new_sessions_total"),
            fallbacks: metrics::counter!("sessiond_middleware_fallbacks_total"),
            rehydrations: metrics::counter!("sessiond_middleware_rehydrations_total"),
            rate_limited: metrics::counter!("sessiond_middleware_rate_limited_total"),
            expired: metrics::counter!("sessiond_middleware_clients_expired_total"),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
