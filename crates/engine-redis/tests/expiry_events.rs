//! Expiry on Redis in real time: a session hash outlives its deadline by the grace (readers
//! already see it as gone), and the sweeps of two engine handles (two nodes) end it with
//! exactly one event, deleting its hash and its index entries.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_engine_redis::keys::Keys;
use sessiond_engine_redis::testing::RedisServer;
use sessiond_engine_redis::{RedisEngine, RedisOptions, DEFAULT_SESSION_EXPIRY_GRACE_MS};
use sessiond_store::testsuite::session;
use sessiond_store::{now_ms, Durability, EventFor, Outbox, SessionStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_end_an_expired_session_with_one_event() {
    let server = RedisServer::start();
    let a = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let b = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys = Keys::new("sessiond");

    let mut rec = session("ending", Some("u"));
    rec.idle_expires_at = now_ms() + 300;
    assert!(a.insert_session(&rec, Durability::Confirmed).await.unwrap());
    let pttl: i64 = redis::cmd("PTTL")
        .arg(keys.session("ending"))
        .query_async(&mut con)
        .await
        .unwrap();
    let grace = i64::try_from(DEFAULT_SESSION_EXPIRY_GRACE_MS).unwrap();
    assert!(
        pttl > grace - 1000,
        "the hash outlives its deadline: {pttl}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while b.get_session("ending", now_ms()).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events: EventFor = Arc::new(|r| Some(format!("expired:{}", r.id).into_bytes()));
    loop {
        let (x, y) = tokio::join!(
            a.sweep_sessions_with(now_ms(), 10, Some(events.clone())),
            b.sweep_sessions_with(now_ms(), 10, Some(events.clone())),
        );
        if x.unwrap() + y.unwrap() == 0 {
            break;
        }
    }
    let queued: Vec<String> = b
        .outbox_read(100)
        .await
        .unwrap()
        .into_iter()
        .map(|i| String::from_utf8(i.data).unwrap())
        .collect();
    assert_eq!(queued, ["expired:ending"], "exactly one event");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(keys.session("ending"))
        .arg(keys.session_expiry("ending"))
        .arg(keys.user_sessions("u"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the hash and its index entries are gone");
}
