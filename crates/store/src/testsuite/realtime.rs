//! The shared suite's checks of `RealtimeBus` (offsets, history and trimming, TTL, delivery
//! to every listener, signals) and of `PresenceStore` (leases, limit, transitions once,
//! sweep, settle). Deliveries may be asynchronous (Redis pub/sub), so every delivery check
//! polls with a deadline; presence checks pass explicit times, so none sleeps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::unique;
use crate::now_ms;
use crate::presence::{PresenceMember, PresenceStore};
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

fn member(id: &str, info: &str) -> PresenceMember {
    PresenceMember {
        id: id.to_string(),
        info: info.to_string(),
    }
}

fn ids(members: &[PresenceMember]) -> Vec<&str> {
    members.iter().map(|m| m.id.as_str()).collect()
}

/// Runs every presence check (leases, limit, transitions once, sweep, settle).
pub async fn run_presence(store: Arc<dyn PresenceStore>) {
    presence_join_leave_and_transitions(store.as_ref()).await;
    presence_leases_and_sweep(store.as_ref()).await;
    presence_settle_once(store.as_ref()).await;
    presence_refresh_many(store.as_ref()).await;
}

async fn presence_join_leave_and_transitions(p: &dyn PresenceStore) {
    let set = unique("u:presence");
    let now = now_ms();
    let j = p
        .join(&set, &member("c1", "one"), now, 60_000, 2)
        .await
        .expect("store call");
    assert!(j.admitted && j.live == 1, "{j:?}");
    let first = j.online.expect("the first member is a transition");
    let j = p
        .join(&set, &member("c2", "two"), now, 60_000, 2)
        .await
        .expect("store call");
    assert_eq!((j.admitted, j.live, j.online), (true, 2, None));
    let j = p
        .join(&set, &member("c3", "three"), now, 60_000, 2)
        .await
        .expect("store call");
    assert_eq!(
        (j.admitted, j.live),
        (false, 2),
        "the limit refuses a new id"
    );
    let j = p
        .join(&set, &member("c2", "two again"), now, 60_000, 2)
        .await
        .expect("store call");
    assert_eq!((j.admitted, j.live, j.online), (true, 2, None), "an update");
    assert_eq!(
        p.member(&set, "c2", now).await.expect("store call"),
        Some("two again".to_string())
    );
    assert_eq!(p.member(&set, "c3", now).await.expect("store call"), None);
    let all = p.members(&set, now).await.expect("store call");
    assert_eq!(ids(&all), ["c1", "c2"]);
    let l = p.leave(&set, "c1", now).await.expect("store call");
    assert_eq!((l.live, l.offline), (1, None), "not the last one");
    let l = p.leave(&set, "c1", now).await.expect("store call");
    assert_eq!(
        (l.live, l.offline),
        (1, None),
        "leaving twice changes nothing"
    );
    let l = p.leave(&set, "c2", now).await.expect("store call");
    assert_eq!(l.live, 0);
    let gone = l.offline.expect("the last leave is a transition");
    assert!(gone > first, "generations grow: {first} then {gone}");
    let l = p.leave(&set, "c2", now).await.expect("store call");
    assert_eq!(l.offline, None, "one transition per change");
    assert!(p.members(&set, now).await.expect("store call").is_empty());
}

async fn presence_leases_and_sweep(p: &dyn PresenceStore) {
    let set = unique("u:lease");
    let other = unique("c:lease");
    let now = now_ms();
    p.join(&set, &member("kept", "k"), now, 1_000, 10)
        .await
        .expect("store call");
    p.join(&set, &member("dead", "d"), now, 1_000, 10)
        .await
        .expect("store call");
    p.join(&other, &member("dead", "d2"), now, 1_000, 10)
        .await
        .expect("store call");
    // The node of `kept` refreshes it; the node of `dead` died. A refresh of a member that
    // left does not bring it back.
    p.leave(&set, "gone", now).await.expect("store call");
    let missing = p
        .refresh(
            &[
                (set.clone(), member("kept", "k2")),
                (set.clone(), member("gone", "g")),
            ],
            now + 800,
            1_000,
        )
        .await
        .expect("store call");
    assert_eq!(
        missing,
        [(set.clone(), "gone".to_string())],
        "reported, not revived"
    );
    let later = now + 1_500;
    let live = p.members(&set, later).await.expect("store call");
    assert_eq!(ids(&live), ["kept"], "expired members are not read");
    assert_eq!(live[0].info, "k2", "a refresh rewrites the info");
    // Readers skip the dead; one sweep removes them and reports each set once.
    let mut swept = p.sweep(later, 1_000).await.expect("store call");
    swept.retain(|e| e.set == set || e.set == other);
    swept.sort_by(|a, b| a.set.cmp(&b.set));
    let mut expected = vec![
        (set.clone(), vec!["dead"], false),
        (other.clone(), vec!["dead"], true),
    ];
    expected.sort();
    let got: Vec<(String, Vec<&str>, bool)> = swept
        .iter()
        .map(|e| (e.set.clone(), ids(&e.members), e.offline.is_some()))
        .collect();
    assert_eq!(got, expected, "the emptied set went offline, the other not");
    assert!(swept.iter().any(|e| e.members[0].info.starts_with('d')));
    let again = p.sweep(later, 1_000).await.expect("store call");
    assert!(
        again.iter().all(|e| e.set != set && e.set != other),
        "swept once"
    );
    // A join after the node died and before a sweep is no transition (still online).
    let stale = unique("u:stale");
    p.join(&stale, &member("x", ""), now, 100, 10)
        .await
        .expect("store call");
    let j = p
        .join(&stale, &member("y", ""), now + 200, 1_000, 1)
        .await
        .expect("store call");
    assert_eq!((j.admitted, j.live, j.online), (true, 1, None), "{j:?}");
}

async fn presence_settle_once(p: &dyn PresenceStore) {
    let set = unique("u:settle");
    let now = now_ms();
    let on = p
        .join(&set, &member("a", ""), now, 60_000, 5)
        .await
        .expect("store call")
        .online
        .expect("online");
    assert!(!p.settle(&set, on, false).await.expect("store call"));
    assert!(p.settle(&set, on, true).await.expect("store call"));
    assert!(
        !p.settle(&set, on, true).await.expect("store call"),
        "settled once"
    );
    // A reload: offline then online again before anyone settled; neither is announced.
    let off = p
        .leave(&set, "a", now)
        .await
        .expect("store call")
        .offline
        .expect("offline");
    let back = p
        .join(&set, &member("b", ""), now, 60_000, 5)
        .await
        .expect("store call")
        .online
        .expect("online");
    assert!(
        !p.settle(&set, off, false).await.expect("store call"),
        "superseded"
    );
    assert!(
        !p.settle(&set, back, true).await.expect("store call"),
        "already announced online"
    );
    let off = p
        .leave(&set, "b", now)
        .await
        .expect("store call")
        .offline
        .expect("offline");
    assert!(p.settle(&set, off, false).await.expect("store call"));
}

/// A renewal of more members than an engine may send in one call (batching).
async fn presence_refresh_many(p: &dyn PresenceStore) {
    let set = unique("c:many");
    let now = now_ms();
    let mut batch = Vec::new();
    for i in 0..1_001 {
        let m = member(&format!("m{i:04}"), "x");
        p.join(&set, &m, now, 1_000, usize::MAX)
            .await
            .expect("store call");
        batch.push((set.clone(), m));
    }
    batch.push((set.clone(), member("never-joined", "x")));
    let missing = p
        .refresh(&batch, now + 800, 1_000)
        .await
        .expect("store call");
    assert_eq!(missing, [(set.clone(), "never-joined".to_string())]);
    let live = p.members(&set, now + 1_500).await.expect("store call");
    assert_eq!(live.len(), 1_001, "every member renewed");
}
