//! The shared suite's checks of `RealtimeBus` (offsets, history and trimming, TTL, delivery
//! to every listener, signals). Deliveries may be asynchronous (Redis pub/sub), so every
//! delivery check polls with a deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::unique;
use crate::now_ms;
use crate::realtime::{BusEvent, BusListener, HistoryLimits, RealtimeBus};

const WAIT: Duration = Duration::from_secs(10);

const LIMITS: HistoryLimits = HistoryLimits {
    keep: 100,
    window_ms: 60_000,
    max: 1_000,
    ttl_ms: 600_000,
};

/// A listener that records what it gets.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<BusEvent>>,
}

impl BusListener for Recorder {
    fn deliver(&self, event: &BusEvent) {
        self.events.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    /// Waits until `pred` holds for the recorded events.
    async fn wait(&self, what: &str, pred: impl Fn(&[BusEvent]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if pred(&self.events.lock().unwrap()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "bus: timed out: {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The offsets of the messages of `channel` among `events`.
fn offsets(events: &[BusEvent], channel: &str) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            BusEvent::Message(m) if m.channel == channel => Some(m.offset),
            _ => None,
        })
        .collect()
}

/// Runs every bus check.
pub async fn run_realtime_bus(bus: Arc<dyn RealtimeBus>) {
    let a = Arc::new(Recorder::default());
    let b = Arc::new(Recorder::default());
    bus.listen(a.clone());
    bus.listen(b.clone());
    for r in [&a, &b] {
        r.wait("a new listener gets a resync", |e| {
            e.contains(&BusEvent::Resync)
        })
        .await;
    }
    bus_offsets_and_delivery(bus.as_ref(), &a, &b).await;
    bus_trimming(bus.as_ref()).await;
    bus_ttl(bus.as_ref()).await;
    bus_signals(bus.as_ref(), &a, &b).await;
}

async fn bus_offsets_and_delivery(bus: &dyn RealtimeBus, a: &Recorder, b: &Recorder) {
    let ch = unique("room:bus");
    let fresh = bus
        .history(&ch, 0, "e1", now_ms(), &LIMITS)
        .await
        .expect("store call");
    assert_eq!(
        (fresh.epoch.as_str(), fresh.top),
        ("e1", 0),
        "a read creates the epoch"
    );
    assert!(fresh.covers("e1", 0) && !fresh.covers("other", 0));
    let mut epochs = Vec::new();
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let (epoch, offset) = bus
            .publish(&ch, text, "e2", now_ms(), &LIMITS)
            .await
            .expect("store call");
        assert_eq!(offset, i as u64 + 1, "offsets count from 1");
        epochs.push(epoch);
    }
    assert!(
        epochs.iter().all(|e| e == "e1"),
        "the epoch stays: {epochs:?}"
    );
    for r in [a, b] {
        r.wait("every listener gets every message", |e| {
            offsets(e, &ch) == [1, 2, 3]
        })
        .await;
    }
    let h = bus
        .history(&ch, 1, "e3", now_ms(), &LIMITS)
        .await
        .expect("store call");
    assert_eq!(h.top, 3);
    let got: Vec<(u64, &str)> = h
        .messages
        .iter()
        .map(|m| (m.offset, m.payload.as_str()))
        .collect();
    assert_eq!(got, [(2, "two"), (3, "three")], "history after an offset");
    assert!(h.covers("e1", 1) && !h.covers("e1", 4) && !h.covers("e1", 0));
    assert!(h
        .messages
        .iter()
        .all(|m| m.channel == ch && m.epoch == "e1"));
}

async fn bus_trimming(bus: &dyn RealtimeBus) {
    let capped = unique("room:cap");
    let limits = HistoryLimits {
        keep: 1,
        window_ms: 60_000,
        max: 3,
        ..LIMITS
    };
    let now = now_ms();
    for _ in 0..5 {
        bus.publish(&capped, "x", "e", now, &limits)
            .await
            .expect("store call");
    }
    let h = bus
        .history(&capped, 0, "e", now, &limits)
        .await
        .expect("store call");
    let kept: Vec<u64> = h.messages.iter().map(|m| m.offset).collect();
    assert_eq!(kept, [3, 4, 5], "never more than max");
    assert!(!h.covers("e", 1) && h.covers("e", 2));

    let aged = unique("room:age");
    let limits = HistoryLimits {
        keep: 1,
        window_ms: 1_000,
        max: 100,
        ..LIMITS
    };
    for t in [now - 5_000, now - 4_999, now] {
        bus.publish(&aged, "x", "e", t, &limits)
            .await
            .expect("store call");
    }
    let h = bus
        .history(&aged, 0, "e", now, &limits)
        .await
        .expect("store call");
    let kept: Vec<u64> = h.messages.iter().map(|m| m.offset).collect();
    assert_eq!(
        kept,
        [3],
        "beyond `keep`, messages older than the window go"
    );
}

async fn bus_ttl(bus: &dyn RealtimeBus) {
    let ch = unique("room:ttl");
    let limits = HistoryLimits {
        ttl_ms: 200,
        ..LIMITS
    };
    let (epoch, _) = bus
        .publish(&ch, "x", "old", now_ms(), &limits)
        .await
        .expect("store call");
    assert_eq!(epoch, "old");
    // A read counts as a use, so it cannot poll: one look, well after the TTL.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let h = bus
        .history(&ch, 0, "new", now_ms(), &limits)
        .await
        .expect("store call");
    assert_eq!(
        h.epoch, "new",
        "an unused channel is forgotten after its TTL"
    );
    assert_eq!(h.top, 0, "a forgotten channel starts over");
    assert!(h.messages.is_empty());
}

async fn bus_signals(bus: &dyn RealtimeBus, a: &Recorder, b: &Recorder) {
    let payload = unique("signal");
    bus.signal(&payload).await.expect("store call");
    for r in [a, b] {
        r.wait("every listener gets a signal", |events| {
            events.contains(&BusEvent::Signal(payload.clone()))
        })
        .await;
    }
}
