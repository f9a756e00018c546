//! Alarms: firing, several per object, retries with backoff, give-up, re-arming, restarts,
//! claim leases, several nodes on one store, and handlers serialized with the object lock.
//!
//! Synchronization is always a channel the handler sends on (with a generous timeout); short
//! fixed waits appear only to show that something does *not* happen.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sessiond_runtime::{
    AlarmError, AlarmHandler, Alarms, FnHandler, ObjectAlarmHandler, ObjectGuard, Runtime,
    RuntimeConfig,
};
use sessiond_store::memory::MemoryEngine;
use sessiond_store::{now_ms, ObjectStore};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

const LONG: Duration = Duration::from_secs(3);

fn store() -> Arc<dyn ObjectStore> {
    Arc::new(MemoryEngine::new())
}

fn fast() -> RuntimeConfig {
    RuntimeConfig {
        alarm_backoff_base: Duration::from_millis(10),
        alarm_poll_max: Duration::from_millis(50),
        ..RuntimeConfig::default()
    }
}

type Fired = (String, String, String);

/// Sends every fire on a channel; fails the first `fail_first` tries.
struct Recorder {
    tx: UnboundedSender<Fired>,
    fail_first: u32,
    tries: AtomicU32,
}

fn recorder(fail_first: u32) -> (Recorder, UnboundedReceiver<Fired>) {
    let (tx, rx) = unbounded_channel();
    let r = Recorder {
        tx,
        fail_first,
        tries: AtomicU32::new(0),
    };
    (r, rx)
}

#[async_trait]
impl AlarmHandler for Recorder {
    async fn fire(&self, key: &str, name: &str, payload: &str) -> Result<(), AlarmError> {
        let _ = self
            .tx
            .send((key.to_string(), name.to_string(), payload.to_string()));
        if self.tries.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(AlarmError::other("boom"));
        }
        Ok(())
    }
}

async fn recv(rx: &mut UnboundedReceiver<Fired>) -> Fired {
    timeout(LONG, rx.recv())
        .await
        .expect("alarm fired in time")
        .expect("channel open")
}

/// Waits (bounded) until the object has no alarms left.
async fn until_no_alarms(alarms: &Alarms, kind: &str, key: &str) {
    timeout(LONG, async {
        while !alarms.list(kind, key).await.expect("list").is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("alarms settled");
}

#[tokio::test]
async fn alarms_fire_several_per_object() {
    let mut b = Runtime::builder(store(), fast());
    let (handler, mut rx) = recorder(0);
    b.alarm_handler("room", handler);
    let rt = b.start();
    let alarms = rt.alarms();
    let now = now_ms();
    alarms
        .set("room", "r1", "b", now + 40, "p2")
        .await
        .expect("set");
    alarms
        .set("room", "r1", "a", now + 20, "p1")
        .await
        .expect("set");
    alarms
        .set("room", "r2", "a", now + 30, "p3")
        .await
        .expect("set");
    assert_eq!(alarms.list("room", "r1").await.expect("list").len(), 2);

    let mut got = vec![
        recv(&mut rx).await,
        recv(&mut rx).await,
        recv(&mut rx).await,
    ];
    got.sort();
    let want = [("r1", "a", "p1"), ("r1", "b", "p2"), ("r2", "a", "p3")];
    let want: Vec<Fired> = want
        .iter()
        .map(|(k, n, p)| (k.to_string(), n.to_string(), p.to_string()))
        .collect();
    assert_eq!(got, want);
    rt.shutdown().await;
    assert!(alarms.list("room", "r1").await.expect("list").is_empty());
    assert!(alarms.list("room", "r2").await.expect("list").is_empty());
}

/// A server that supervises its own tasks runs the loops itself: alarms fire, and cancelling
/// the token it gave the runtime ends both loops.
#[tokio::test]
async fn loops_handed_to_the_caller_fire_alarms_and_end_with_the_token() {
    let token = sessiond_runtime::CancellationToken::new();
    let mut b = Runtime::builder(store(), fast());
    let (handler, mut rx) = recorder(0);
    b.alarm_handler("room", handler);
    b.cancellation_token(token.clone());
    let (rt, loops) = b.start_loops();
    let names: Vec<&str> = loops.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["alarm-scheduler", "eviction-sweep"]);
    let running: Vec<_> = loops
        .into_iter()
        .map(|(_, run)| tokio::spawn(run))
        .collect();
    rt.alarms()
        .set("room", "r1", "a", now_ms() + 20, "p1")
        .await
        .expect("set");
    assert_eq!(recv(&mut rx).await.2, "p1");
    token.cancel();
    for run in running {
        timeout(LONG, run)
            .await
            .expect("loop ended with the token")
            .expect("loop did not panic");
    }
    rt.shutdown().await;
}

#[tokio::test]
async fn cancelled_alarm_does_not_fire() {
    let mut b = Runtime::builder(store(), fast());
    let (handler, mut rx) = recorder(0);
    b.alarm_handler("k", handler);
    let rt = b.start();
    let alarms = rt.alarms();
    alarms
        .set("k", "o", "gone", now_ms() + 30, "")
        .await
        .expect("set");
    alarms
        .set("k", "o", "kept", now_ms() + 60, "")
        .await
        .expect("set");
    assert!(alarms.cancel("k", "o", "gone").await.expect("cancel"));
    assert!(!alarms.cancel("k", "o", "gone").await.expect("cancel"));
    assert_eq!(recv(&mut rx).await.1, "kept");
    rt.shutdown().await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn failing_handler_is_retried_then_succeeds() {
    let mut b = Runtime::builder(store(), fast());
    let (handler, mut rx) = recorder(2);
    b.alarm_handler("k", handler);
    let rt = b.start();
    let alarms = rt.alarms();
    let start = std::time::Instant::now();
    alarms.set("k", "o", "n", now_ms(), "x").await.expect("set");
    for _ in 0..3 {
        recv(&mut rx).await;
    }
    // Backoff 10 ms then 20 ms before the third try.
    assert!(start.elapsed() >= Duration::from_millis(30));
    until_no_alarms(alarms, "k", "o").await;
    rt.shutdown().await;
    assert!(rx.try_recv().is_err(), "no fourth try after success");
}

#[tokio::test]
async fn failing_handler_gives_up_after_max_attempts() {
    let config = RuntimeConfig {
        alarm_max_attempts: 3,
        ..fast()
    };
    let mut b = Runtime::builder(store(), config);
    let (handler, mut rx) = recorder(u32::MAX);
    b.alarm_handler("k", handler);
    let rt = b.start();
    let alarms = rt.alarms();
    alarms.set("k", "o", "n", now_ms(), "x").await.expect("set");
    recv(&mut rx).await;
    recv(&mut rx).await;
    recv(&mut rx).await;
    until_no_alarms(alarms, "k", "o").await;
    // Well past the next backoff (40 ms): no fourth try.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(rx.try_recv().is_err(), "gave up after 3 tries");
    rt.shutdown().await;
}

#[tokio::test]
async fn alarm_of_unknown_kind_is_dropped_after_max_attempts() {
    let config = RuntimeConfig {
        alarm_max_attempts: 2,
        ..fast()
    };
    let rt = Runtime::builder(store(), config).start();
    let alarms = rt.alarms();
    alarms
        .set("ghost", "o", "n", now_ms(), "")
        .await
        .expect("set");
    until_no_alarms(alarms, "ghost", "o").await;
    rt.shutdown().await;
}

#[tokio::test]
async fn handler_that_rearms_keeps_its_new_alarm() {
    let mut b = Runtime::builder(store(), fast());
    let alarms = b.alarms();
    let (tx, mut rx) = unbounded_channel::<Fired>();
    let handler_alarms = alarms.clone();
    b.alarm_handler(
        "k",
        FnHandler(move |key: String, name: String, payload: String| {
            let alarms = handler_alarms.clone();
            let tx = tx.clone();
            async move {
                if payload == "first" {
                    alarms
                        .set("k", &key, &name, now_ms() + 20, "second")
                        .await?;
                }
                let _ = tx.send((key, name, payload));
                Ok(())
            }
        }),
    );
    let rt = b.start();
    alarms
        .set("k", "o", "tick", now_ms(), "first")
        .await
        .expect("set");
    assert_eq!(recv(&mut rx).await.2, "first");
    assert_eq!(recv(&mut rx).await.2, "second");
    until_no_alarms(&alarms, "k", "o").await;
    rt.shutdown().await;
}

#[tokio::test]
async fn alarms_survive_a_restart() {
    let store = store();
    // First runtime: arms alarms, then stops before they are due.
    let first = Runtime::builder(store.clone(), fast()).start();
    let due = now_ms() + 150;
    first
        .alarms()
        .set("k", "o", "a", due, "1")
        .await
        .expect("set");
    first
        .alarms()
        .set("k", "o", "b", due, "2")
        .await
        .expect("set");
    first.shutdown().await;
    drop(first);

    // Second runtime on the same store, now with a handler.
    let mut b = Runtime::builder(store.clone(), fast());
    let (handler, mut rx) = recorder(0);
    b.alarm_handler("k", handler);
    let second = b.start();
    let mut names = vec![recv(&mut rx).await.1, recv(&mut rx).await.1];
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert!(now_ms() >= due, "not fired early");
    second.shutdown().await;
    assert!(store
        .object_alarms("k", "o")
        .await
        .expect("list")
        .is_empty());
}

/// Signals when it starts, then blocks until released (or forever).
struct Blocking {
    started: UnboundedSender<Fired>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl AlarmHandler for Blocking {
    async fn fire(&self, key: &str, name: &str, payload: &str) -> Result<(), AlarmError> {
        let _ = self
            .started
            .send((key.to_string(), name.to_string(), payload.to_string()));
        self.release.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn claim_lease_prevents_double_firing() {
    let mut b = Runtime::builder(store(), fast());
    let (tx, mut rx) = unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    b.alarm_handler(
        "k",
        Blocking {
            started: tx,
            release: release.clone(),
        },
    );
    let rt = b.start();
    let alarms = rt.alarms();
    alarms.set("k", "o", "n", now_ms(), "").await.expect("set");
    recv(&mut rx).await;
    // While the handler runs, the alarm is claimed one lease (30 s) ahead...
    let claimed = alarms.list("k", "o").await.expect("list");
    assert_eq!(claimed.len(), 1);
    assert!(
        claimed[0].due_at >= now_ms() + 20_000,
        "claimed: {claimed:?}"
    );
    // ...so several scheduler polls (50 ms each) pass without a second fire.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "fired twice");
    assert_eq!(rt.alarms_in_flight(), 1);
    release.notify_one();
    rt.shutdown().await;
    assert!(alarms.list("k", "o").await.expect("list").is_empty());
}

#[tokio::test]
async fn crash_mid_handler_refires_after_the_lease() {
    let store = store();
    let config = RuntimeConfig {
        alarm_claim_lease: Duration::from_millis(150),
        ..fast()
    };
    // First node: the handler never finishes; the node "crashes" (abandons it).
    let mut b = Runtime::builder(store.clone(), config.clone());
    let (tx, mut started) = unbounded_channel();
    b.alarm_handler(
        "k",
        Blocking {
            started: tx,
            release: Arc::new(tokio::sync::Notify::new()),
        },
    );
    let first = b.start();
    first
        .alarms()
        .set("k", "o", "n", now_ms(), "p")
        .await
        .expect("set");
    recv(&mut started).await;
    assert!(!first.shutdown_timeout(Duration::from_millis(10)).await);

    // Second node: fires it again once the lease ends.
    let mut b = Runtime::builder(store.clone(), config);
    let (handler, mut rx) = recorder(0);
    b.alarm_handler("k", handler);
    let second = b.start();
    assert_eq!(recv(&mut rx).await, ("o".into(), "n".into(), "p".into()));
    second.shutdown().await;
    assert!(store
        .object_alarms("k", "o")
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_store_fire_each_alarm_once() {
    let store = store();
    let (tx, mut rx) = unbounded_channel();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut b = Runtime::builder(store.clone(), fast());
        b.alarm_handler(
            "k",
            Recorder {
                tx: tx.clone(),
                fail_first: 0,
                tries: AtomicU32::new(0),
            },
        );
        nodes.push(b.start());
    }
    let alarms = Alarms::new(store.clone());
    let due = now_ms() + 30;
    for i in 0..20 {
        alarms
            .set("k", &format!("o{i}"), "n", due, "")
            .await
            .expect("set");
    }
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..20 {
        keys.push(recv(&mut rx).await.0);
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 20, "every alarm fired");
    for n in &nodes {
        n.shutdown().await;
    }
    assert!(rx.try_recv().is_err(), "no alarm fired twice");
}

/// Counts fires in the object's state, under the object lock.
struct Count(UnboundedSender<Fired>);

#[async_trait]
impl ObjectAlarmHandler<u32> for Count {
    async fn fire(
        &self,
        object: &mut ObjectGuard<u32>,
        name: &str,
        _: &str,
    ) -> Result<(), AlarmError> {
        *object.get_or_insert_with(|| 0) += 1;
        let _ = self
            .0
            .send((object.key().to_string(), name.to_string(), String::new()));
        Ok(())
    }
}

#[tokio::test]
async fn object_handler_runs_under_the_object_lock() {
    let mut b = Runtime::builder(store(), fast());
    let kind = b.kind::<u32>("counter");
    let (tx, mut rx) = unbounded_channel();
    b.object_alarm_handler(&kind, Count(tx));
    let rt = b.start();

    let mut held = kind.lock("c").await;
    held.set(10);
    rt.alarms()
        .set("counter", "c", "n", now_ms(), "")
        .await
        .expect("set");
    // The handler is waiting for our lock: nothing happens while we hold it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        rx.try_recv().is_err(),
        "handler ran while the object was locked"
    );
    drop(held);
    recv(&mut rx).await;
    assert_eq!(*kind.lock("c").await, Some(11));
    rt.shutdown().await;
}
