//! [`StreamWakes`] on Redis: tail notifications over pub/sub.
//!
//! Why pub/sub: a notification is a hint (a woken reader re-reads the stream), so at-most-once
//! delivery is enough, and a `Resync` after every (re)subscription covers what was missed
//! while the connection was down. Every change script publishes on one channel; each engine
//! instance skips its own notifications by node id.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use sessiond_store::{Millis, StreamWake, StreamWakes, WakeSink};

use crate::RedisEngine;

/// Sinks of tail notifications, shared with the subscriber task.
pub(crate) type Sinks = Arc<Mutex<Vec<WakeSink>>>;

/// A random id naming this engine instance in its notifications (so it skips its own).
pub(crate) fn node_id() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

impl StreamWakes for RedisEngine {
    fn listen(&self, sink: WakeSink) {
        let first = {
            let mut sinks = crate::lock(&self.wake_sinks);
            sinks.push(sink);
            sinks.len() == 1
        };
        if first {
            tokio::spawn(run_wakes(
                self.seeds.clone(),
                self.keys.stream_wake_channel(),
                self.node.clone(),
                Arc::downgrade(&self.wake_sinks),
            ));
        }
    }
}

/// Calls every sink; false once the engine is gone.
fn deliver(sinks: &Weak<Mutex<Vec<WakeSink>>>, wake: StreamWake<'_>) -> bool {
    let Some(sinks) = sinks.upgrade() else {
        return false;
    };
    let sinks: Vec<WakeSink> = crate::lock(&sinks).clone();
    for sink in sinks {
        sink(wake);
    }
    true
}

/// The subscriber: one pub/sub connection per engine, resubscribed after any failure, with a
/// `Resync` after every (re)subscription since notifications may have been missed meanwhile.
async fn run_wakes(
    seeds: Arc<Vec<redis::Client>>,
    channel: String,
    node: String,
    sinks: Weak<Mutex<Vec<WakeSink>>>,
) {
    let mut delay = Duration::from_millis(100);
    let mut seed = 0;
    loop {
        if sinks.strong_count() == 0 {
            return;
        }
        if let Some(mut pubsub) = crate::conn::pubsub_any(&seeds, &mut seed).await {
            if pubsub.subscribe(&channel).await.is_ok() {
                delay = Duration::from_millis(100);
                metrics::counter!("sessiond_engine_redis_subscriptions_total").increment(1);
                if !deliver(&sinks, StreamWake::Resync) {
                    return;
                }
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Some((from, sent_ms, path)) = parse_wake(msg.get_payload_bytes()) else {
                        continue;
                    };
                    if from == node.as_bytes() {
                        continue;
                    }
                    let lag_ms = (sessiond_store::now_ms() - sent_ms).max(0);
                    metrics::histogram!("sessiond_engine_redis_wake_lag_seconds")
                        .record(lag_ms as f64 / 1000.0);
                    if !deliver(&sinks, StreamWake::Changed(path)) {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Splits `<node> <tail> <ms> <path>` into the node id, the Redis time and the path.
fn parse_wake(raw: &[u8]) -> Option<(&[u8], Millis, &str)> {
    let mut parts = raw.splitn(4, |b| *b == b' ');
    let node = parts.next()?;
    let _tail = parts.next()?;
    let ms = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let path = std::str::from_utf8(parts.next()?).ok()?;
    Some((node, ms, path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn wake_payloads_keep_spaces_in_paths() {
        assert_eq!(
            super::parse_wake(b"n1 42 1700000000123 a b/c"),
            Some((&b"n1"[..], 1_700_000_000_123, "a b/c"))
        );
        assert_eq!(super::parse_wake(b"n1 - 5 p"), Some((&b"n1"[..], 5, "p")));
        assert_eq!(super::parse_wake(b"n1 42"), None);
    }
}
