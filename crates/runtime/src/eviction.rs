//! Idle eviction: dropping the in-memory state of objects nobody used for a while.
//!
//! Durable Objects evicts idle objects to bound memory; persisted state comes back on the next
//! access through [`ObjectGuard::load`](crate::ObjectGuard::load). A slot is removed only when
//! its `Arc` is held by the table alone (no guard, no waiter: both hold a clone, taken under
//! the shard lock) and its last use is older than the kind's idle time. Both checks happen
//! under the shard lock, so no new user can appear between check and removal.
//!
//! The sweep is a plain periodic task over every registered kind; kinds are type-erased behind
//! `Evictable` so one task serves kinds of different state types.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::table::{lock_shard, KindInner};

/// A kind the sweep can evict from, whatever its state type.
pub(crate) trait Evictable: Send + Sync {
    fn kind_name(&self) -> &str;
    fn evict_idle(&self, now: Instant) -> usize;
}

impl<S: Send + 'static> Evictable for KindInner<S> {
    fn kind_name(&self) -> &str {
        &self.name
    }

    fn evict_idle(&self, now: Instant) -> usize {
        evict_idle(self, now)
    }
}

/// Removes idle, unused slots of one kind; returns how many were removed.
pub(crate) fn evict_idle<S>(kind: &KindInner<S>, now: Instant) -> usize {
    let idle = kind.idle_after();
    let mut evicted = 0;
    for shard in kind.shards.iter() {
        let mut map = lock_shard(shard);
        map.retain(|_, slot| {
            if Arc::strong_count(slot) != 1 {
                return true; // a guard or a waiter has it
            }
            // Nobody else holds the Arc, so this cannot fail in practice; treat a failure as
            // "in use" all the same.
            let keep = match slot.try_lock() {
                Ok(s) => now.saturating_duration_since(s.last_used) < idle,
                Err(_) => true,
            };
            if !keep {
                evicted += 1;
            }
            keep
        });
    }
    if evicted > 0 {
        kind.adjust_resident(0, evicted);
        metrics::counter!("sessiond_runtime_evictions_total", "kind" => kind.name.clone())
            .increment(evicted as u64);
        tracing::debug!(kind = %kind.name, evicted, "evicted idle objects");
    }
    evicted
}

/// Sweeps all `kinds` every `interval` until `cancel` fires.
pub(crate) async fn run_sweeper(
    kinds: Vec<Arc<dyn Evictable>>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; nothing can be idle yet
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {
                let now = Instant::now();
                for kind in &kinds {
                    let n = kind.evict_idle(now);
                    tracing::trace!(kind = kind.kind_name(), evicted = n, "eviction sweep");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    use super::*;
    use crate::ObjectKind;

    /// Records the last value of every counter and gauge, by rendered key.
    #[derive(Default)]
    struct Values(Mutex<HashMap<String, Arc<AtomicU64>>>);

    struct Cell(Arc<AtomicU64>);

    impl CounterFn for Cell {
        fn increment(&self, v: u64) {
            self.0.fetch_add(v, Ordering::Relaxed);
        }
        fn absolute(&self, v: u64) {
            self.0.store(v, Ordering::Relaxed);
        }
    }

    impl GaugeFn for Cell {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, v: f64) {
            self.0.store(v as u64, Ordering::Relaxed);
        }
    }

    impl Values {
        fn cell(&self, key: &Key) -> Arc<AtomicU64> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            lock_shard(&self.0).entry(name).or_default().clone()
        }
        fn get(&self, name: &str) -> u64 {
            lock_shard(&self.0)
                .get(name)
                .map_or(0, |c| c.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Values {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Cell(self.cell(key))))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(Arc::new(Cell(self.cell(key))))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn eviction_updates_gauge_and_counter() {
        let values = Values::default();
        metrics::with_local_recorder(&values, || {
            let kind = ObjectKind::<u32>::in_memory("m");
            for key in ["a", "b", "c"] {
                let slot = kind.inner.slot(key);
                slot.try_lock().expect("free").state = Some(1);
            }
            assert_eq!(values.get("sessiond_runtime_objects{kind=m}"), 3);
            let later = Instant::now() + kind.idle_after() + Duration::from_secs(1);
            assert_eq!(kind.evict_idle(later), 3);
            assert_eq!(values.get("sessiond_runtime_objects{kind=m}"), 0);
            assert_eq!(values.get("sessiond_runtime_evictions_total{kind=m}"), 3);
        });
    }
}
