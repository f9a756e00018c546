//! Security events on two sessiond nodes sharing one Redis (issue 19 §6 on issue 10's
//! scale-out): a session's life spread over both nodes — created on A with a device, patched
//! on B, rotated on A, revoked on B — and another session's idle expiry leave each event once,
//! in order, in the user's stream and the global one, read through either node; the sockets
//! on the other node get the §2 ending (rotation 4004, revoke and expiry `session_ended` +
//! 4001), and each closed socket is recorded once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;
#[path = "common/security_changes.rs"]
mod security_changes;

use std::time::{Duration, Instant};

use common::{json, TestServer};
use realtime_support::{connect, Ws};
use security_changes::user_stream;
use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;

const KEY: &str = "security-nodes-test-key-0123456789ab";

async fn node(redis: &RedisServer) -> TestServer {
    TestServer::start_node(redis, |c| {
        c.api_keys = vec![KEY.into()];
        c.sessions.sweep_interval_s = 1;
    })
    .await
}

const GLOBAL: &str = "/v1/stream/__security/all";

/// The stream's events, in order, and each exactly once (the relay's appends are idempotent
/// producer requests, so a second copy of an event would be a bug).
async fn events(s: &TestServer, path: &str) -> Vec<Value> {
    let events = security_changes::events(&s.http, &s.url(path), KEY).await;
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        let id = e["id"].as_str().unwrap_or_default().to_string();
        assert!(
            seen.insert(id.clone()),
            "event {id} twice in {path}: {events:?}"
        );
    }
    events
}

/// Polls `path` on `s` until an event `kind` of `session` is there (a deadline, no fixed
/// sleep).
async fn wait_event(s: &TestServer, path: &str, kind: &str, session: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = events(s, path).await;
        if security_changes::has(&got, kind, session) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} of {session} in {path}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many expiry sweeps `s` ran (its Redis round trips reading due expiry entries).
async fn sweeps(s: &TestServer) -> f64 {
    let text = s
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("sessiond_engine_redis_round_trips_total{")
                && l.contains("op=\"session_expiry_due\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn create(s: &TestServer, body: Value) -> String {
    let (status, created) = json(s.post("/v1/sessions").bearer_auth(KEY).json(&body)).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_string()
}

async fn socket(s: &TestServer, token: &str) -> Ws {
    let mut ws = connect(s, &format!("/v1/realtime?token={token}"), &[])
        .await
        .open();
    ws.expect("connected").await;
    ws
}

/// The socket got `session_ended` with `reason`, then the close `4001 <close>`.
async fn ended(mut ws: Ws, reason: &str, close: &str) {
    let frame = ws.expect("session_ended").await;
    assert_eq!(frame["reason"], reason, "{frame}");
    assert_eq!(ws.closed().await, (4001, close.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_spread_over_two_nodes_leaves_each_event_once_in_order() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis).await, node(&redis).await);
    let user = "nodes-grace";
    let stream = user_stream(user);

    let device =
        json!({"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"});
    let first = create(&a, json!({"user_id": user, "device": device})).await;
    wait_event(&b, &stream, "session.created", &first).await;
    let on_b = socket(&b, &first).await;
    let (status, _) = json(
        b.patch(&format!("/v1/sessions/{first}"))
            .bearer_auth(KEY)
            .json(&json!({"data": {"role": "admin"}})),
    )
    .await;
    assert_eq!(status, 200);
    wait_event(&a, &stream, "session.context_changed", &first).await;

    let (status, rotated) = json(
        a.post(&format!("/v1/sessions/{first}/rotate"))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["id"].as_str().unwrap().to_string();
    let mut on_b = on_b;
    assert_eq!(on_b.closed().await, (4004, "Session rotated".into()));
    wait_event(&b, &stream, "session.rotated", &second).await;

    let on_a = socket(&a, &second).await;
    let status = b
        .delete(&format!("/v1/sessions/{second}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    ended(on_a, "revoked", "Session revoked").await;
    wait_event(&a, &stream, "session.revoked", &second).await;

    // Idle expiry: both nodes sweep every second; the socket lives on the other node.
    // (The socket opens at once: the session lives one second.)
    let idle = create(&a, json!({"user_id": user, "idle_ttl_s": 1})).await;
    let on_b = socket(&b, &idle).await;
    ended(on_b, "expired_idle", "Session expired (idle)").await;
    wait_event(&b, &stream, "session.created", &idle).await;
    wait_event(&a, &stream, "session.expired", &idle).await;
    wait_event(&b, &stream, "socket.closed", &idle).await;
    wait_event(&b, &stream, "socket.closed", &second).await;

    let lifecycle = [
        ("session.created", first.as_str()),
        ("session.context_changed", first.as_str()),
        ("session.rotated", second.as_str()),
        ("session.revoked", second.as_str()),
        ("session.created", idle.as_str()),
        ("session.expired", idle.as_str()),
    ];
    // Both nodes swept again since (a second expiry event would have been queued by then),
    // and the relays of both ran since.
    for n in [&a, &b] {
        let swept = sweeps(n).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while sweeps(n).await < swept + 2.0 {
            assert!(Instant::now() < deadline, "{} stopped sweeping", n.addr);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_event(&a, &stream, "session.expired", &idle).await;
    for (via, path) in [
        (&a, &stream),
        (&b, &stream),
        (&a, &GLOBAL.to_string()),
        (&b, &GLOBAL.to_string()),
    ] {
        let got = events(via, path).await;
        let sessions: Vec<(&str, &str)> = got
            .iter()
            .filter(|e| {
                e["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("session."))
            })
            .map(|e| {
                (
                    e["type"].as_str().unwrap(),
                    e["session_id"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            sessions, lifecycle,
            "{path} via {}: one event per step, in order",
            via.addr
        );
        let expired = got
            .iter()
            .find(|e| e["type"] == "session.expired" && e["session_id"] == idle.as_str())
            .unwrap();
        assert_eq!(expired["reason"], "idle", "{expired}");
        let closes: Vec<(&str, &str)> = got
            .iter()
            .filter(|e| e["type"] == "socket.closed")
            .map(|e| {
                (
                    e["session_id"].as_str().unwrap(),
                    e["reason"].as_str().unwrap(),
                )
            })
            .collect();
        let mut closes = closes;
        closes.sort();
        let mut want = vec![
            (second.as_str(), "revoked"),
            (idle.as_str(), "expired_idle"),
        ];
        want.sort();
        assert_eq!(closes, want, "{path}: each closed socket once");
        let global = path.as_str() == GLOBAL;
        for e in &got {
            assert_eq!(e.get("user_id").is_some(), !global, "{path}: {e}");
        }
    }
}

/// The `user_ref` of `session`'s `session.created` in the global stream, once it is there.
async fn created_ref(s: &TestServer, session: &str) -> String {
    wait_event(s, GLOBAL, "session.created", session).await;
    let all = events(s, GLOBAL).await;
    let created = all
        .iter()
        .find(|e| e["type"] == "session.created" && e["session_id"] == session)
        .unwrap();
    created["user_ref"].as_str().unwrap().to_string()
}

/// An erasure through the node that does not relay still gives the user a new `user_ref`:
/// the relaying node's cached one is dropped (the erasure mark), so nothing after the erasure
/// in the global stream points back at the events before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_through_another_node_drops_the_relays_cached_user_ref() {
    let redis = RedisServer::start();
    let relaying = node(&redis).await;
    let user = "nodes-erased";
    let before = create(&relaying, json!({"user_id": user})).await;
    // The first node has relayed (so it holds the relay lease) before the second starts.
    let old_ref = created_ref(&relaying, &before).await;
    let other = node(&redis).await;

    let (status, _) = json(
        other
            .delete(&format!("/v1/users/{user}?confirm={user}"))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 204);
    let after = create(&other, json!({"user_id": user})).await;
    let new_ref = created_ref(&other, &after).await;
    assert_ne!(new_ref, old_ref, "the erased user's old user_ref came back");
}
