//! Operating a cluster of real `sessiond` processes sharing one redis-server:
//! - a client state's TTL alarm armed through node A fires on node B after A was killed with
//!   SIGKILL (B's scheduler was never woken for it: it finds the alarm by polling Redis), so
//!   the state expires on time and the client's next visit, on B, is a rehydration;
//! - each node's `/metrics` counts its own Redis round trips by operation and the lag of the
//!   realtime messages other nodes published, and `/readyz` follows Redis going away and
//!   coming back (no sessiond restart).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;

#[path = "common/binary.rs"]
mod binary;

use binary::{metric, Binary};

const KEY: &str = "cluster-alarms-signing-key-of-32-bytes";
const TTL_S: u64 = 3;

/// Both nodes verify each other's cookies; client states live `TTL_S`; schedulers poll
/// Redis every 200 ms.
fn node(redis: &RedisServer) -> Binary {
    let env = [
        ("SESSIOND_MIDDLEWARE__SIGNING_KEYS", format!("[\"{KEY}\"]")),
        ("SESSIOND_MIDDLEWARE__CLIENT_TTL_S", TTL_S.to_string()),
        ("SESSIOND_RUNTIME__ALARM_POLL_MS", "200".to_string()),
    ];
    Binary::spawn_on_redis(&redis.url(), &[], &env)
}

/// One decision through `node` for a browser sending `cookie`; returns the answer and the
/// browser's cookie header afterwards.
async fn visit(http: &reqwest::Client, node: &Binary, cookie: &str) -> (Value, String) {
    let res = http
        .post(node.url("/v1/middleware/decide"))
        .json(&json!({"cookie": cookie, "ip": "192.0.2.9", "user_agent": "t/1", "url": "https://app.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let mut jar: Vec<(String, String)> = cookie
        .split("; ")
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    for set in body["set_cookies"].as_array().unwrap() {
        let (name, value) = set
            .as_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap();
        jar.retain(|(n, _)| n != name);
        jar.push((name.to_owned(), value.to_owned()));
    }
    let jar = jar
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    (body, jar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_alarm_armed_on_a_killed_node_fires_on_another() {
    let redis = RedisServer::start();
    let a = node(&redis);
    let b = node(&redis);
    let http = reqwest::Client::new();

    // First visit (stores nothing), then the first return through A: the client state is
    // stored and its TTL alarm armed, due TTL_S from now.
    let (_, jar) = visit(&http, &a, "").await;
    let stored_at = Instant::now();
    let (second, jar) = visit(&http, &a, &jar).await;
    assert_eq!(second["session"]["isNewClient"], false, "{second}");
    a.kill();
    assert!(
        stored_at.elapsed() < Duration::from_secs(TTL_S),
        "A died before the alarm was due"
    );

    // B fires it: the state expires without any request.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&http, &b.base, "sessiond_middleware_clients_expired_total").await < 1.0 {
        assert!(Instant::now() < deadline, "the alarm never fired on B");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stored_at.elapsed() >= Duration::from_secs(TTL_S),
        "not before it was due"
    );
    assert_eq!(
        metric(&http, &b.base, "sessiond_alarm_fires_total").await,
        1.0
    );

    // The browser comes back through B: its state is gone, so it is restored from the cookie.
    let before = metric(&http, &b.base, "sessiond_middleware_rehydrations_total").await;
    let (third, _) = visit(&http, &b, &jar).await;
    assert_eq!(third["session"]["cID"], second["session"]["cID"], "{third}");
    assert_eq!(
        metric(&http, &b.base, "sessiond_middleware_rehydrations_total").await,
        before + 1.0
    );
}

/// Polls `check` (bounded) until it is true.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(http: &reqwest::Client, node: &Binary) -> u16 {
    let res = http.get(node.url("/readyz")).send().await.unwrap();
    res.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_redis_metrics_and_readiness() {
    let mut redis = RedisServer::start();
    let a = node(&redis);
    let b = node(&redis);
    let http = reqwest::Client::new();

    // A publish on A: one round trip on A; B receives it over pub/sub and records its lag.
    let trips = "sessiond_engine_redis_round_trips_total";
    let (a_before, b_before) = (
        metric(&http, &a.base, trips).await,
        metric(&http, &b.base, trips).await,
    );
    let res = http
        .post(a.url("/v1/realtime/publish"))
        .json(&json!({"channel": "room:ops", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = http
        .get(a.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!("{trips}{{op=\"rt_publish\"}} 1")),
        "{text}"
    );
    assert!(metric(&http, &a.base, trips).await > a_before);
    eventually("B records the pub/sub lag of A's message", || async {
        metric(&http, &b.base, "sessiond_realtime_bus_lag_seconds_count").await >= 1.0
    })
    .await;
    let b_text = http
        .get(b.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !b_text.contains(&format!("{trips}{{op=\"rt_publish\"}}")),
        "B did not publish"
    );
    assert!(metric(&http, &b.base, trips).await >= b_before);

    // Redis goes away: neither node is ready; it comes back: both are, without a restart.
    assert_eq!((ready(&http, &a).await, ready(&http, &b).await), (200, 200));
    redis.kill9();
    for n in [&a, &b] {
        eventually("not ready without Redis", || async {
            ready(&http, n).await == 503
        })
        .await;
    }
    redis.restart();
    for n in [&a, &b] {
        eventually("ready again", || async { ready(&http, n).await == 200 }).await;
    }
}
