//! The shared engine suite against a private 3-master Redis Cluster: every script and
//! multi-key command must stay in one slot (the cluster refuses others with `CROSSSLOT`),
//! pipelines spanning slots are split, and forks use the single-slot protocol.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use sessiond_engine_redis::testing::RedisCluster;
use sessiond_engine_redis::{RedisEngine, RedisOptions};
use sessiond_store::{EngineAdmin, Stores};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_passes_the_shared_suite() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("cluster formed in {:?}", started.elapsed());
    // One seed is enough: the client discovers the other masters.
    let engine = RedisEngine::connect_cluster(&cluster.urls()[..1], RedisOptions::default())
        .await
        .unwrap();
    assert!(engine.is_cluster());
    let bus = engine.shared_realtime_bus().unwrap();
    let stores = Stores::from_engine(engine.clone())
        .with_streams(engine.clone())
        .with_seal_lease(engine.clone())
        .with_realtime(bus)
        .with_presence(engine.clone());
    sessiond_store::testsuite::run_all(stores).await;
    engine.close().await.unwrap();
    eprintln!("suite on the cluster took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_dead_master_fails_the_ping() {
    let mut cluster = RedisCluster::start();
    let engine = RedisEngine::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .unwrap();
    engine.ping().await.unwrap();
    cluster.kill_node(2);
    // PING goes to every master, so readiness (`/readyz`) reports the dead one.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while engine.ping().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "ping still succeeds with a master down"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn no_seed_is_refused() {
    assert!(RedisEngine::connect_cluster(&[], RedisOptions::default())
        .await
        .is_err());
}

/// The wake subscriber sits on the first seed; when that node dies it moves to the next seed
/// (a cluster forwards every `PUBLISH` to every node, so any node will do) and resyncs.
#[tokio::test]
async fn the_subscriber_moves_to_another_seed_when_its_node_dies() {
    use sessiond_store::{StreamWake, StreamWakes};
    use std::sync::{Arc, Mutex};

    let mut cluster = RedisCluster::start();
    let engine = RedisEngine::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    engine.listen(Arc::new(move |wake: StreamWake<'_>| {
        let what = match wake {
            StreamWake::Changed(path) => path.to_string(),
            StreamWake::Resync => "<resync>".to_string(),
        };
        sink.lock().unwrap().push(what);
    }));
    let count = |what: &str| seen.lock().unwrap().iter().filter(|w| *w == what).count();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while count("<resync>") < 1 {
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cluster.kill_node(0);
    // Notifications published on a surviving node reach the subscriber again (it resynced).
    let survivor = redis::Client::open(cluster.urls()[1].as_str()).unwrap();
    let mut con = survivor.get_multiplexed_async_connection().await.unwrap();
    while count("after/failover") == 0 {
        assert!(
            Instant::now() < deadline,
            "the subscriber did not move to another seed"
        );
        let _: i64 = redis::cmd("PUBLISH")
            .arg("sessiond:streams:wake")
            .arg("other-node 5 1700000000000 after/failover")
            .query_async(&mut con)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        count("<resync>") >= 2,
        "a resync after the move: {:?}",
        seen.lock().unwrap()
    );
}

/// With one master down, commits to streams of the other masters still succeed, even when
/// they share a batch (and a pipeline) with commits to the dead master's streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_fails_only_the_commits_of_its_slots() {
    use sessiond_store::testsuite::{stream_chunk, stream_meta};
    use sessiond_store::{Commit, Durability, ProducerUpdate, StoreError, StreamStore};

    let mut cluster = RedisCluster::start();
    let engine = RedisEngine::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .unwrap();
    let keys = sessiond_engine_redis::keys::Keys::new("sessiond");
    let paths: Vec<String> = (0..40).map(|i| format!("part/{i}")).collect();
    for p in &paths {
        let created = engine
            .create_stream(&stream_meta(p, 0, b"s"), &[], Durability::Confirmed)
            .await
            .unwrap();
        assert!(created);
    }
    // Which master owns each stream (asked of a surviving node).
    let dead_port = cluster.ports()[2];
    let mut con = redis::Client::open(cluster.urls()[0].as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut con)
        .await
        .unwrap();
    let mut dead_ranges = Vec::new();
    for range in slots {
        let start: i64 = redis::from_redis_value(range[0].clone()).unwrap();
        let end: i64 = redis::from_redis_value(range[1].clone()).unwrap();
        let master: Vec<redis::Value> = redis::from_redis_value(range[2].clone()).unwrap();
        let port: u16 = redis::from_redis_value(master[1].clone()).unwrap();
        if port == dead_port {
            dead_ranges.push(start..=end);
        }
    }
    let mut on_dead = Vec::new();
    for p in &paths {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&keys.stream(p)[0])
            .query_async(&mut con)
            .await
            .unwrap();
        on_dead.push(dead_ranges.iter().any(|r| r.contains(&slot)));
    }
    assert!(on_dead.iter().any(|d| *d) && on_dead.iter().any(|d| !*d));

    cluster.kill_node(2);
    let mut tickets = Vec::new();
    for p in &paths {
        let ticket = engine
            .commit_enqueue(
                p,
                0,
                vec![stream_chunk(0, 3)],
                stream_meta(p, 3, b"s"),
                ProducerUpdate::default(),
                Durability::Confirmed,
            )
            .await
            .unwrap();
        tickets.push(ticket);
    }
    let mut live = Vec::new();
    for ((p, ticket), dead) in paths.iter().zip(tickets).zip(on_dead) {
        match ticket.await {
            Ok(Commit::Written) => assert!(!dead, "{p} committed on a dead master"),
            Err(_) if dead => {}
            // The one way a live master's commit may fail: the client stalled (see
            // `cluster_con`) and the commit timed out, its fate unknown.
            Err(StoreError::Unavailable(e)) if e.contains("timed out") => {}
            Err(e) => panic!("{p} failed although its master is up: {e}"),
            Ok(other) => panic!("{p}: {other:?}"),
        }
        if !dead {
            live.push(p);
        }
    }
    // Whatever happened above, the engine is not left wedged: every live stream takes its
    // next commit (a stalled connection was rebuilt after its first timeout).
    for p in live {
        let tail = engine.stream_meta(p).await.unwrap().unwrap().tail;
        let commit = engine
            .commit_enqueue(
                p,
                tail,
                vec![stream_chunk(tail, 1)],
                stream_meta(p, tail + 1, b"s"),
                ProducerUpdate::default(),
                Durability::Confirmed,
            )
            .await
            .unwrap()
            .await;
        assert!(matches!(commit, Ok(Commit::Written)), "{p}: {commit:?}");
    }
}
