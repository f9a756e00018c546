//! Limits of the `__ds` subscriptions (`[streams.subscriptions]`).
//!
//! Each one bounds work or storage that a single client request could otherwise make
//! unbounded: pattern matching per append, links (cursor rows) per subscription, the wake
//! snapshot written with every wake, changes queued between the append path and the
//! subscription task, and what a webhook receiver can make the server read and wait for.

use serde::{Deserialize, Serialize};

/// `[streams.subscriptions]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// Most `/`-separated segments of a subscription `pattern`; more is a 400.
    pub max_pattern_segments: usize,
    /// Deepest stream path a subscription follows: an explicit `streams[]` entry or
    /// `wake_stream` deeper than this is a 400, and patterns never match deeper streams.
    pub max_path_segments: usize,
    /// Most linked streams per subscription. A `PUT` whose pattern already matches more, or
    /// a `POST …/streams` that would exceed it, is a 400; streams created later beyond it are
    /// not linked (logged and counted in `sessiond_streams_subscription_links_refused_total`).
    pub max_links: usize,
    /// Most streams listed in one wake (webhook body, claim answer); the rest wait for the
    /// next wake, issued as soon as this one is done.
    pub max_streams_per_wake: usize,
    /// Stream changes queued for the subscription task. When it is full the change is
    /// dropped and the task rescans every subscription once it catches up (counted in
    /// `sessiond_streams_subscription_resyncs_total`), so no wake is lost and memory stays
    /// bounded.
    pub observer_queue: usize,
    /// Shortest time between two checks of the shared subscription index version on a
    /// shared engine (ms). Every check is one engine read; appends observed in between wait
    /// for the next check, so their wakes may leave up to this much later, and a node reads the
    /// version at most `1000 / index_check_ms` times a second however many appends it makes
    /// (without it, one read per observed batch: about one per append on a busy stream).
    /// `0` checks once per batch.
    pub index_check_ms: u64,
    /// Whole time allowed for one webhook delivery: connect, send, answer (ms).
    pub webhook_timeout_ms: u64,
    /// Largest webhook answer read (bytes); a longer answer counts as a failed delivery.
    pub webhook_max_response_bytes: usize,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        SubscriptionsConfig {
            max_pattern_segments: 32,
            max_path_segments: 64,
            max_links: 10_000,
            max_streams_per_wake: 256,
            observer_queue: 65_536,
            index_check_ms: 20,
            webhook_timeout_ms: 10_000,
            webhook_max_response_bytes: 64 * 1024,
        }
    }
}

impl SubscriptionsConfig {
    /// Checks the values; the message names the key to fix.
    pub fn validate(&self) -> Result<(), sessiond_http::ConfigError> {
        let zero = [
            ("max_pattern_segments", self.max_pattern_segments),
            ("max_path_segments", self.max_path_segments),
            ("max_links", self.max_links),
            ("max_streams_per_wake", self.max_streams_per_wake),
            ("observer_queue", self.observer_queue),
            (
                "webhook_max_response_bytes",
                self.webhook_max_response_bytes,
            ),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0)
        .map(|(k, _)| k)
        .or((self.webhook_timeout_ms == 0).then_some("webhook_timeout_ms"));
        match zero {
            Some(key) => Err(format!("streams.subscriptions.{key} must be > 0").into()),
            None => Ok(()),
        }
    }
}
