//! Native TTLs are set, Redis expires records by itself, and the sweepers tidy the indexes.
//! (Session hashes outlive their deadline by a grace so that the sweep ends them with their
//! event; these checks set no grace, which leaves the native TTL alone, the safety net.)
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sessiond_engine_redis::keys::Keys;
use sessiond_engine_redis::testing::RedisServer;
use sessiond_engine_redis::{RedisEngine, RedisOptions};
use sessiond_store::testsuite::session;
use sessiond_store::{now_ms, CacheEntry, CachePut, CacheStore, Durability, SessionStore};

const C: Durability = Durability::Confirmed;

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

async fn cmd<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    c: &mut redis::Cmd,
) -> T {
    c.query_async(con).await.unwrap()
}

#[tokio::test]
async fn sessions_expire_natively_and_sweep_cleans_the_index() {
    let server = RedisServer::start();
    let options = RedisOptions {
        session_expiry_grace_ms: 0,
        ..RedisOptions::default()
    };
    let e = RedisEngine::connect(&server.url(), options).await.unwrap();
    let mut con = raw(&server).await;
    let keys = Keys::new("sessiond");

    let mut rec = session("short", Some("u"));
    rec.idle_expires_at = now_ms() + 300;
    assert!(e.insert_session(&rec, C).await.unwrap());
    let pttl: i64 = cmd(&mut con, redis::cmd("PTTL").arg(keys.session("short"))).await;
    assert!(
        pttl > 0 && pttl <= 300,
        "session hash carries the idle deadline: {pttl}"
    );
    assert!(e
        .touch_session("short", now_ms() + 600, now_ms(), now_ms(), C)
        .await
        .unwrap());
    let pttl: i64 = cmd(&mut con, redis::cmd("PTTL").arg(keys.session("short"))).await;
    assert!(pttl > 300, "touch re-arms the TTL: {pttl}");

    tokio::time::sleep(Duration::from_millis(800)).await;
    let exists: i64 = cmd(&mut con, redis::cmd("EXISTS").arg(keys.session("short"))).await;
    assert_eq!(exists, 0, "Redis expired the hash");
    let card: i64 = cmd(&mut con, redis::cmd("ZCARD").arg(keys.user_sessions("u"))).await;
    assert_eq!(card, 1, "the index still points at it");
    for _ in 0..100 {
        if e.sweep_sessions(now_ms(), 10).await.unwrap() == 0 {
            break;
        }
    }
    let card: i64 = cmd(&mut con, redis::cmd("ZCARD").arg(keys.user_sessions("u"))).await;
    assert_eq!(card, 0, "the sweep removed the stale member");
    assert!(e
        .list_user_sessions("u", now_ms(), 10)
        .await
        .unwrap()
        .is_empty());

    // Listing alone also drops stale members.
    let mut rec = session("short2", Some("v"));
    rec.idle_expires_at = now_ms() + 100;
    e.insert_session(&rec, C).await.unwrap();
    e.insert_session(&session("long", Some("v")), C)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = e.list_user_sessions("v", now_ms(), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let card: i64 = cmd(&mut con, redis::cmd("ZCARD").arg(keys.user_sessions("v"))).await;
    assert_eq!(card, 1, "list removed the stale member");
}

#[tokio::test]
async fn cache_expires_natively_and_the_limit_forgets_dead_namespaces() {
    let server = RedisServer::start();
    let e = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let mut con = raw(&server).await;
    let keys = Keys::new("sessiond");
    let now = now_ms();
    let short = CacheEntry {
        value: "1".into(),
        stored_at: now,
        expires_at: Some(now + 300),
    };
    let long = CacheEntry {
        value: "2".into(),
        stored_at: now,
        expires_at: Some(now + 3_600_000),
    };
    let forever = CacheEntry {
        value: "3".into(),
        stored_at: now,
        expires_at: None,
    };

    assert_eq!(
        e.cache_put("a", "k", &short, 2, now, C).await.unwrap(),
        CachePut::Stored
    );
    assert_eq!(
        e.cache_put("b", "short", &short, 2, now, C).await.unwrap(),
        CachePut::Stored
    );
    assert_eq!(
        e.cache_put("b", "long", &long, 2, now, C).await.unwrap(),
        CachePut::Stored
    );
    assert_eq!(
        e.cache_put("c", "k", &short, 2, now, C).await.unwrap(),
        CachePut::NamespaceLimit
    );
    let pttl: i64 = cmd(&mut con, redis::cmd("PTTL").arg(keys.cache_entry("a", "k"))).await;
    assert!(pttl > 0 && pttl <= 300, "entry TTL {pttl}");
    let pttl: i64 = cmd(&mut con, redis::cmd("PTTL").arg(keys.cache_index("b"))).await;
    assert!(
        pttl > 300,
        "index lives as long as its longest entry: {pttl}"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = now_ms();
    let exists: i64 = cmd(&mut con, redis::cmd("EXISTS").arg(keys.cache_index("a"))).await;
    assert_eq!(exists, 0, "index of a fully expired namespace expired too");
    assert_eq!(
        e.cache_put("c", "k", &forever, 2, now, C).await.unwrap(),
        CachePut::Stored,
        "namespace `a` no longer counts"
    );
    let pttl: i64 = cmd(&mut con, redis::cmd("PTTL").arg(keys.cache_index("c"))).await;
    assert_eq!(
        pttl, -1,
        "an index with a never-expiring entry is persistent"
    );

    let mut removed = 0;
    for _ in 0..10 {
        removed += e.sweep_cache(now, 100).await.unwrap();
    }
    assert_eq!(removed, 1, "the sweeper removed b/short's index member");
    let card: i64 = cmd(&mut con, redis::cmd("ZCARD").arg(keys.cache_index("b"))).await;
    assert_eq!(card, 1);
    let registered: Vec<String> = cmd(
        &mut con,
        redis::cmd("ZRANGE")
            .arg(keys.cache_namespaces(false))
            .arg(0)
            .arg(-1),
    )
    .await;
    assert_eq!(
        registered,
        ["b", "c"],
        "dead namespace `a` left the registry"
    );

    // Deleting the last entry frees the namespace's slot at once.
    assert!(e.cache_delete("c", "k", now, C).await.unwrap());
    assert_eq!(
        e.cache_put("d", "k", &long, 2, now, C).await.unwrap(),
        CachePut::Stored
    );
    assert_eq!(
        e.cache_put("e", "k", &long, 2, now, C).await.unwrap(),
        CachePut::NamespaceLimit
    );
}

/// Hashes written before `auth_time` existed read their `created_at`.
#[tokio::test]
async fn a_session_hash_without_auth_time_reads_its_creation_time() {
    let server = RedisServer::start();
    let e = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let mut con = raw(&server).await;
    let keys = Keys::new("sessiond");
    let mut rec = session("old-hash", Some("u"));
    rec.auth_time = rec.created_at + 7;
    assert!(e.insert_session(&rec, C).await.unwrap());
    let removed: i64 = cmd(
        &mut con,
        redis::cmd("HDEL")
            .arg(keys.session("old-hash"))
            .arg("auth_time"),
    )
    .await;
    assert_eq!(removed, 1, "auth_time is a field of the hash");
    let got = e.get_session("old-hash", now_ms()).await.unwrap().unwrap();
    assert_eq!(got.auth_time, rec.created_at);
}
