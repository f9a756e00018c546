//! Every way a session ends closes the sockets it authenticated (4001) within a second on
//! this node: idle expiry, absolute expiry, eviction by the per-user cap, revoke. v1 sockets
//! first get `session_ended` with the reason and a close reason naming it; seed C's sockets
//! keep the reason its hook compares. Real server, real WebSocket client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use std::time::{Duration, Instant};

use common::{json, TestServer};
use realtime_support::{connect, Ws};
use serde_json::json;
use sessiond::config::EngineKind;

/// Creates a session for `user` with the given lifetimes; returns its id.
async fn session_with(s: &TestServer, user: &str, idle_s: u64, absolute_s: u64) -> String {
    let (status, body) = json(s.post("/v1/sessions").json(&json!({
        "user_id": user, "idle_ttl_s": idle_s, "absolute_ttl_s": absolute_s,
    })))
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn v1(s: &TestServer, token: &str) -> Ws {
    let mut ws = connect(s, &format!("/v1/realtime?token={token}"), &[])
        .await
        .open();
    ws.expect("connected").await;
    ws
}

/// The `session_ended` frame and the close that follows.
async fn ended(ws: &mut Ws) -> (String, u16, String) {
    let frame = ws.expect("session_ended").await;
    let (code, reason) = ws.closed().await;
    (frame["reason"].as_str().unwrap().to_string(), code, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_closes_sockets_within_a_second_of_the_deadline() {
    let s = TestServer::start(EngineKind::Sqlite, |_| {}).await;

    // Idle expiry: nothing uses the session after the socket opened.
    let idle = session_with(&s, "alice", 1, 3600).await;
    let opened = Instant::now();
    let mut ws = v1(&s, &idle).await;
    let mut seed = connect(&s, &format!("/__user-session?token={idle}"), &[])
        .await
        .open();
    seed.expect("initial_state").await;
    let (reason, code, text) = ended(&mut ws).await;
    let took = opened.elapsed();
    assert_eq!(
        (reason.as_str(), code, text.as_str()),
        ("expired_idle", 4001, "Session expired (idle)")
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2200),
        "closed {took:?} after connecting with a 1 s idle window"
    );
    assert_eq!(
        seed.closed().await,
        (4001, "Logged out from all devices".to_string()),
        "seed C's sockets keep the reason its hook compares"
    );

    // Absolute expiry, while the app keeps the session busy (idle never runs out).
    let absolute = session_with(&s, "bob", 3600, 2).await;
    let opened = Instant::now();
    let mut ws = v1(&s, &absolute).await;
    let (reason, code, text) = ended(&mut ws).await;
    assert_eq!(
        (reason.as_str(), code, text.as_str()),
        ("expired_absolute", 4001, "Session expired (absolute)")
    );
    assert!(
        opened.elapsed() < Duration::from_millis(3200),
        "{:?}",
        opened.elapsed()
    );

    // A session the app keeps using slides: the socket outlives its first idle deadline.
    let used = session_with(&s, "carol", 2, 3600).await;
    let opened = Instant::now();
    let mut ws = v1(&s, &used).await;
    let path = format!("/v1/sessions/{used}");
    while opened.elapsed() < Duration::from_millis(3000) {
        let (status, _) = json(s.get(&path)).await;
        assert_eq!(status, 200);
        ws.send(json!({"type": "ping", "id": 1})).await;
        ws.expect("pong").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Left alone, it then ends.
    let (reason, code, _) = ended(&mut ws).await;
    assert_eq!((reason.as_str(), code), ("expired_idle", 4001));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_and_revoke_close_the_sockets_of_those_sessions() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.sessions.max_sessions_per_user = 2;
    })
    .await;
    let oldest = session_with(&s, "alice", 3600, 3600).await;
    let mut first = v1(&s, &oldest).await;
    let second = session_with(&s, "alice", 3600, 3600).await;
    let mut kept = v1(&s, &second).await;
    // A third login evicts the oldest session, and its socket with it.
    let started = Instant::now();
    let _third = session_with(&s, "alice", 3600, 3600).await;
    let (reason, code, text) = ended(&mut first).await;
    assert_eq!(
        (reason.as_str(), code, text.as_str()),
        ("evicted", 4001, "Session evicted")
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Revoking one session closes its sockets, with that reason; the others stay.
    let res = s
        .delete(&format!("/v1/sessions/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (reason, code, text) = ended(&mut kept).await;
    assert_eq!(
        (reason.as_str(), code, text.as_str()),
        ("revoked", 4001, "Session revoked")
    );

    // Log out everywhere: the logout reason.
    let token = session_with(&s, "alice", 3600, 3600).await;
    let mut ws = v1(&s, &token).await;
    let (status, _) = json(s.delete("/v1/users/alice/sessions")).await;
    assert_eq!(status, 200);
    let (reason, code, text) = ended(&mut ws).await;
    assert_eq!(
        (reason.as_str(), code, text.as_str()),
        ("logged_out", 4001, "Logged out from all devices")
    );
}
