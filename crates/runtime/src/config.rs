//! Runtime tuning knobs, with defaults taken from Durable Objects where it has one.
//!
//! Everything is a plain `Duration`/count so the server can fill it from its own config file;
//! tests shrink the timings (10 ms backoff, short poll) to stay fast without sleeping as
//! synchronization.

use std::time::Duration;

/// Configuration of a [`Runtime`](crate::Runtime).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// In-memory state of an object unused for this long is dropped (default 5 min). Kinds
    /// created through the builder inherit it; [`ObjectKind::set_idle_after`] overrides it.
    ///
    /// [`ObjectKind::set_idle_after`]: crate::ObjectKind::set_idle_after
    pub idle_evict_after: Duration,
    /// How often the eviction sweep runs (default 30 s).
    pub eviction_interval: Duration,
    /// How far a fired alarm is pushed into the future while its handler runs (default 30 s):
    /// a crash mid-handler refires it after the lease, and the scheduler does not fire it twice
    /// meanwhile.
    pub alarm_claim_lease: Duration,
    /// Base of the exponential retry backoff: attempt `n` (0-based) retries after
    /// `base * 2^n` (default 2 s, as Durable Objects).
    pub alarm_backoff_base: Duration,
    /// Total tries of one alarm before it is dropped with a warning (default 6).
    pub alarm_max_attempts: u32,
    /// Longest the scheduler sleeps between store reads (default 1 s), so an alarm written by
    /// another node or a missed wake-up is still picked up.
    pub alarm_poll_max: Duration,
    /// Most due alarms claimed per scheduler pass (default 256).
    pub alarm_batch: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            idle_evict_after: Duration::from_secs(5 * 60),
            eviction_interval: Duration::from_secs(30),
            alarm_claim_lease: Duration::from_secs(30),
            alarm_backoff_base: Duration::from_secs(2),
            alarm_max_attempts: 6,
            alarm_poll_max: Duration::from_secs(1),
            alarm_batch: 256,
        }
    }
}

impl RuntimeConfig {
    /// Delay before retrying after the `failures`-th failed attempt (1-based):
    /// `base * 2^(failures - 1)`, saturating instead of overflowing.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.alarm_backoff_base.saturating_mul(1u32 << exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base() {
        let c = RuntimeConfig::default();
        assert_eq!(c.backoff(1), Duration::from_secs(2));
        assert_eq!(c.backoff(2), Duration::from_secs(4));
        assert_eq!(c.backoff(5), Duration::from_secs(32));
        // Huge attempt counts saturate rather than overflow.
        assert!(c.backoff(u32::MAX) >= Duration::from_secs(2));
    }
}
