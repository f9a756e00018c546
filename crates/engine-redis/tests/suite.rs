//! The shared engine suite against a private redis-server.
#![allow(clippy::unwrap_used)]

use sessiond_engine_redis::testing::RedisServer;
use sessiond_engine_redis::{RedisEngine, RedisOptions};
use sessiond_store::{EngineAdmin, Stores};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_engine_passes_the_shared_suite() {
    let server = RedisServer::start();
    let engine = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    assert_eq!(engine.name(), "redis");
    let bus = engine.realtime_bus(&server.url()).unwrap();
    let stores = || {
        Stores::from_engine(engine.clone())
            .with_streams(engine.clone())
            .with_seal_lease(engine.clone())
    };
    sessiond_store::testsuite::run_all(stores().with_realtime(bus).with_presence(engine.clone()))
        .await;
    // A second run on the same server: the suite's ids are unique per run, and leftovers of
    // the first run (index members, registry entries) must not disturb it.
    sessiond_store::testsuite::run_all(stores()).await;
    engine.close().await.unwrap();
    assert!(engine.ping().await.is_err(), "closed engine refuses calls");
}

#[tokio::test]
async fn braces_in_the_key_prefix_are_refused() {
    let server = RedisServer::start();
    let options = RedisOptions {
        key_prefix: "a{b}".into(),
        ..RedisOptions::default()
    };
    assert!(RedisEngine::connect(&server.url(), options).await.is_err());
}

#[tokio::test]
async fn unbounded_limits_and_batches_are_accepted() {
    use sessiond_store::{now_ms, CacheStore, ObjectStore, SessionStore};
    let server = RedisServer::start();
    let e = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let now = now_ms();
    e.insert_session(
        &sessiond_store::testsuite::session("s", Some("u")),
        sessiond_store::Durability::Confirmed,
    )
    .await
    .unwrap();
    assert_eq!(
        e.list_user_sessions("u", now, usize::MAX)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(e
        .list_objects("k", "", None, usize::MAX)
        .await
        .unwrap()
        .is_empty());
    assert!(e.due_alarms(now, usize::MAX).await.unwrap().is_empty());
    assert_eq!(e.next_alarm_at().await.unwrap(), None);
    assert_eq!(e.sweep_sessions(now, usize::MAX).await.unwrap(), 0);
    assert_eq!(e.sweep_cache(now, usize::MAX).await.unwrap(), 0);
    assert!(e.list_objects("k", "", None, 0).await.unwrap().is_empty());
}
