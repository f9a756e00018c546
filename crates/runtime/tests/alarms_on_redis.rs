//! Alarms on several nodes sharing one real Redis: each node is a runtime with its own engine
//! connection, as separate processes would have. What is checked is what a cluster relies on:
//! an alarm set through a node that died fires on another (its scheduler was never woken, it
//! finds the alarm by polling); a claim of a node that died mid-handler is taken over after
//! the lease; a handler slower than the lease keeps its claim (no concurrent second fire);
//! and many alarms over three nodes fire exactly once each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_engine_redis::testing::RedisServer;
use sessiond_engine_redis::{RedisEngine, RedisOptions};
use sessiond_runtime::{FnHandler, Runtime, RuntimeConfig};
use sessiond_store::{now_ms, ObjectStore};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

const LONG: Duration = Duration::from_secs(10);

/// A fire: (node, key), sent when the handler starts.
type Fired = (usize, String);

async fn engine(server: &RedisServer) -> Arc<dyn ObjectStore> {
    RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .expect("connect")
}

fn config(lease: Duration) -> RuntimeConfig {
    RuntimeConfig {
        alarm_backoff_base: Duration::from_millis(10),
        alarm_poll_max: Duration::from_millis(100),
        alarm_claim_lease: lease,
        ..RuntimeConfig::default()
    }
}

/// A node: a runtime whose handler for kind `k` reports `(node, key)` and then runs for `busy`
/// (or forever with `None`, like a handler stuck when its process dies).
async fn node(
    server: &RedisServer,
    id: usize,
    lease: Duration,
    busy: Option<Duration>,
    tx: &UnboundedSender<Fired>,
) -> Runtime {
    let mut b = Runtime::builder(engine(server).await, config(lease));
    let tx = tx.clone();
    b.alarm_handler(
        "k",
        FnHandler(move |key: String, _name: String, _payload: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((id, key));
                match busy {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                Ok::<(), sessiond_runtime::AlarmError>(())
            }
        }),
    );
    b.start()
}

async fn recv(rx: &mut UnboundedReceiver<Fired>) -> Fired {
    timeout(LONG, rx.recv())
        .await
        .expect("alarm fired in time")
        .expect("channel open")
}

/// Waits (bounded) until no alarm of kind `k` is left on `key`.
async fn until_settled(store: &dyn ObjectStore, key: &str) {
    let deadline = Instant::now() + LONG;
    while !store.object_alarms("k", key).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "alarm of {key} not settled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_set_through_a_dead_node_fires_on_another() {
    let server = RedisServer::start();
    let (tx, mut rx) = unbounded_channel();
    let lease = Duration::from_secs(30);
    let b = node(&server, 1, lease, Some(Duration::ZERO), &tx).await;
    let a = node(&server, 0, lease, Some(Duration::ZERO), &tx).await;
    // Set through A (whose own scheduler alone is woken), due after A is gone.
    a.alarms()
        .set("k", "o", "n", now_ms() + 300, "")
        .await
        .unwrap();
    assert!(a.shutdown_timeout(Duration::ZERO).await);
    drop(a);
    assert_eq!(recv(&mut rx).await, (1, "o".to_string()), "fired on B");
    until_settled(&*engine(&server).await, "o").await;
    assert!(rx.try_recv().is_err(), "fired once");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_of_a_node_that_died_mid_handler_is_taken_over_after_the_lease() {
    let server = RedisServer::start();
    let lease = Duration::from_millis(500);
    let (tx, mut rx) = unbounded_channel();
    let a = node(&server, 0, lease, None, &tx).await;
    a.alarms().set("k", "o", "n", now_ms(), "").await.unwrap();
    assert_eq!(recv(&mut rx).await, (0, "o".to_string()));
    let claimed_at = Instant::now();
    // A "dies" with its handler stuck: the claim stays in Redis, unrenewed.
    assert!(!a.shutdown_timeout(Duration::ZERO).await);
    drop(a);
    let b = node(&server, 1, lease, Some(Duration::ZERO), &tx).await;
    assert_eq!(recv(&mut rx).await, (1, "o".to_string()), "refired on B");
    assert!(
        claimed_at.elapsed() >= lease - Duration::from_millis(50),
        "not before the lease ended"
    );
    until_settled(&*engine(&server).await, "o").await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_slower_than_the_lease_is_not_fired_twice() {
    let server = RedisServer::start();
    // Each handler runs for three leases; the other nodes poll every 100 ms all along. (The
    // lease is long enough that a busy machine delaying one renewal does not lapse it.)
    let lease = Duration::from_secs(1);
    let (tx, mut rx) = unbounded_channel();
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(node(&server, id, lease, Some(lease * 3), &tx).await);
    }
    nodes[0]
        .alarms()
        .set("k", "slow", "n", now_ms(), "")
        .await
        .unwrap();
    recv(&mut rx).await;
    until_settled(&*engine(&server).await, "slow").await;
    assert!(rx.try_recv().is_err(), "a second fire ran concurrently");
    for n in &nodes {
        n.shutdown().await;
    }
    assert!(rx.try_recv().is_err(), "fired once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_over_three_nodes_fire_once_each() {
    let server = RedisServer::start();
    let (tx, mut rx) = unbounded_channel();
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(
            node(
                &server,
                id,
                Duration::from_secs(30),
                Some(Duration::ZERO),
                &tx,
            )
            .await,
        );
    }
    const N: usize = 60;
    let due = now_ms() + 200;
    for i in 0..N {
        nodes[i % 3]
            .alarms()
            .set("k", &format!("o{i:02}"), "n", due, "")
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    for _ in 0..N {
        keys.push(recv(&mut rx).await.1);
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), N, "every alarm fired");
    let store = engine(&server).await;
    for i in 0..N {
        until_settled(&*store, &format!("o{i:02}")).await;
    }
    for n in &nodes {
        n.shutdown().await;
    }
    assert!(rx.try_recv().is_err(), "no alarm fired twice");
}
