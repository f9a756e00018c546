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
        .with_realtime(bus);
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
