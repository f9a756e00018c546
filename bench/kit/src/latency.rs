//! Latency distributions in microseconds.
//!
//! An HDR histogram (3 significant figures, 1 µs to 1 h) instead of sorted sample vectors: a
//! broadcast to 1,000 sockets for ten seconds records millions of deliveries, and the load
//! tool must not grow by gigabytes or spend its CPU sorting while it competes with the server
//! for the same cores.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Largest latency kept exactly (1 h in µs); larger values are recorded as this.
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        // The bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, 3 sig figs).
        let hist =
            Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid");
        Latency { hist }
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(MAX_US));
    }

    /// Records one latency given in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.min(MAX_US));
    }

    /// Adds every value of `other` (per-task histograms merged at the end).
    pub fn merge(&mut self, other: &Latency) {
        // Both have the same bounds, so `add` cannot refuse a value; fall back to saturating
        // records anyway rather than lose samples.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The `q`-quantile (0..=1) in µs; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            return 0;
        }
        self.hist.value_at_quantile(q)
    }

    /// The largest latency recorded, in µs; 0 when empty.
    pub fn max_us(&self) -> u64 {
        if self.hist.is_empty() {
            return 0;
        }
        self.hist.max()
    }
}

/// Microseconds since the first call: the clock that send times embedded in messages and
/// receive times share (one process sends and receives, so no clock sync is needed).
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for us in 1..=500 {
            a.record_us(us);
        }
        for us in 501..=1000 {
            b.record(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a.count(), 1000);
        let p50 = a.quantile_us(0.5);
        let p99 = a.quantile_us(0.99);
        assert!((499..=501).contains(&p50), "p50 {p50}");
        assert!((989..=991).contains(&p99), "p99 {p99}");
        assert!((999..=1001).contains(&a.max_us()), "max {}", a.max_us());
    }

    #[test]
    fn empty_and_out_of_range() {
        let mut h = Latency::new();
        assert_eq!(h.quantile_us(0.99), 0);
        assert_eq!(h.max_us(), 0);
        h.record(Duration::from_secs(10 * 3600));
        h.record_us(0);
        assert_eq!(h.count(), 2);
        assert!(h.max_us() >= MAX_US - MAX_US / 1000);
    }
}
