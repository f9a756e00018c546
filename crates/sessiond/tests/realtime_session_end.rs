//! Every way a session ends closes what it authenticated (4001) within a second on this node:
//! idle expiry, absolute expiry, eviction by the per-user cap, revoke (one, all but one, all).
//! v1 sockets and SSE readers first get `session_ended` with the reason and a close reason
//! naming it (SSE: the `logout` event); seed C's sockets keep the reason its hook compares.
//! A rotation closes what the old id opened with 4004 `Session rotated` and nothing else.
//! Before the idle deadline every client is warned (`session_expiring`); `touch` or the v1
//! `extend_session` frame extends the session.
//! Real server, real WebSocket client, real SSE reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use std::time::{Duration, Instant};

use common::{json, TestServer};
use realtime_support::sse::{open, SseReader};
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

/// What one session token opened: a v1 socket, a seed C socket and an SSE reader.
struct Clients {
    v1: Ws,
    seed: Ws,
    sse: SseReader,
}

impl Clients {
    async fn open(s: &TestServer, user: &str, token: &str) -> Clients {
        let mut v1 = connect(s, &format!("/v1/realtime?token={token}"), &[])
            .await
            .open();
        v1.expect("connected").await;
        let mut seed = connect(s, &format!("/__user-session?token={token}"), &[])
            .await
            .open();
        seed.expect("initial_state").await;
        let query = format!("channels=user:{user}&token={token}");
        let mut sse = open(s, &query, None).await.unwrap();
        sse.expect("subscribed").await;
        Clients { v1, seed, sse }
    }

    /// Every client saw the ending `reason` (v1 frame) with the v1/SSE close reason `close`.
    async fn ended(mut self, reason: &str, close: &str) {
        let frame = self.v1.expect("session_ended").await;
        assert_eq!(frame["reason"], reason, "v1 frame");
        assert_eq!(
            self.v1.closed().await,
            (4001, close.to_string()),
            "v1 close"
        );
        assert_eq!(
            self.seed.closed().await,
            (4001, "Logged out from all devices".to_string()),
            "seed C's sockets keep the reason its hook compares ({reason})"
        );
        let event = self.sse.until("session_ended").await;
        assert_eq!(event.data["reason"], reason, "SSE frame");
        let logout = self.sse.expect("logout").await;
        assert_eq!(
            (&logout.data["code"], &logout.data["reason"]),
            (&json!(4001), &json!(close)),
            "SSE logout event"
        );
        assert!(self.sse.next().await.is_none(), "the SSE stream ends");
    }

    /// Every client was closed with 4004 `Session rotated`, without a `session_ended`.
    async fn rotated(mut self) {
        let rotated = (4004, "Session rotated".to_string());
        assert_eq!(self.v1.closed().await, rotated, "v1");
        assert_eq!(self.seed.closed().await, rotated, "seed C");
        let event = self.sse.until("close").await;
        assert_eq!(
            (&event.data["code"], &event.data["reason"]),
            (&json!(4004), &json!("Session rotated")),
            "SSE close event"
        );
        assert!(self.sse.next().await.is_none(), "the SSE stream ends");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_closes_sockets_within_a_second_of_the_deadline() {
    let s = TestServer::start(EngineKind::Sqlite, |_| {}).await;

    // Idle expiry: nothing uses the session after the clients opened.
    let idle = session_with(&s, "alice", 1, 3600).await;
    let opened = Instant::now();
    let clients = Clients::open(&s, "alice", &idle).await;
    clients
        .ended("expired_idle", "Session expired (idle)")
        .await;
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2200),
        "closed {took:?} after connecting with a 1 s idle window"
    );

    // Absolute expiry, while the app keeps the session busy (idle never runs out).
    let absolute = session_with(&s, "bob", 3600, 2).await;
    let opened = Instant::now();
    let clients = Clients::open(&s, "bob", &absolute).await;
    clients
        .ended("expired_absolute", "Session expired (absolute)")
        .await;
    assert!(
        opened.elapsed() < Duration::from_millis(3200),
        "{:?}",
        opened.elapsed()
    );

    // A session the app keeps using slides: the socket outlives its first idle deadline.
    let used = session_with(&s, "carol", 2, 3600).await;
    let opened = Instant::now();
    let mut ws = connect(&s, &format!("/v1/realtime?token={used}"), &[])
        .await
        .open();
    ws.expect("connected").await;
    let path = format!("/v1/sessions/{used}");
    while opened.elapsed() < Duration::from_millis(3000) {
        let (status, _) = json(s.get(&path)).await;
        assert_eq!(status, 200);
        ws.send(json!({"type": "ping", "id": 1})).await;
        ws.expect("pong").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Left alone, it then ends.
    let frame = ws.expect("session_ended").await;
    assert_eq!(frame["reason"], "expired_idle");
    assert_eq!(ws.closed().await.0, 4001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_and_revokes_close_what_those_sessions_opened() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.sessions.max_sessions_per_user = 2;
    })
    .await;
    let oldest = session_with(&s, "alice", 3600, 3600).await;
    let first = Clients::open(&s, "alice", &oldest).await;
    let second = session_with(&s, "alice", 3600, 3600).await;
    let kept = Clients::open(&s, "alice", &second).await;
    // A third login evicts the oldest session, and what it opened with it.
    let started = Instant::now();
    let third = session_with(&s, "alice", 3600, 3600).await;
    first.ended("evicted", "Session evicted").await;
    assert!(started.elapsed() < Duration::from_secs(1));

    // Revoking one session closes its clients, with that reason; the others stay.
    let third_clients = Clients::open(&s, "alice", &third).await;
    let res = s
        .delete(&format!("/v1/sessions/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    kept.ended("revoked", "Session revoked").await;

    // Revoke all but one: the others end as revoked.
    let fourth = session_with(&s, "alice", 3600, 3600).await;
    let (status, _) = json(s.delete(&format!("/v1/users/alice/sessions?except={fourth}"))).await;
    assert_eq!(status, 200);
    third_clients.ended("revoked", "Session revoked").await;

    // Log out everywhere: revoked, with the logout reason.
    let clients = Clients::open(&s, "alice", &fourth).await;
    let (status, _) = json(s.delete("/v1/users/alice/sessions")).await;
    assert_eq!(status, 200);
    clients
        .ended("revoked", "Logged out from all devices")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_closes_what_the_old_id_opened_with_4004() {
    for engine in common::engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let old = session_with(&s, "alice", 3600, 3600).await;
        let other = session_with(&s, "alice", 3600, 3600).await;
        let clients = Clients::open(&s, "alice", &old).await;
        let mut bystander = connect(&s, &format!("/v1/realtime?token={other}"), &[])
            .await
            .open();
        bystander.expect("connected").await;

        let started = Instant::now();
        let (status, rotated) = json(s.post(&format!("/v1/sessions/{old}/rotate"))).await;
        assert_eq!(status, 200, "{engine:?}: {rotated}");
        clients.rotated().await;
        assert!(started.elapsed() < Duration::from_secs(1), "{engine:?}");

        // The old id opens nothing any more; the new one does; the other session's socket
        // is untouched.
        let (status, _) = connect(&s, &format!("/v1/realtime?token={old}"), &[])
            .await
            .refused();
        assert_eq!(status, 401, "{engine:?}: old id");
        let new = rotated["id"].as_str().unwrap();
        Clients::open(&s, "alice", new).await;
        bystander.send(json!({"type": "ping", "id": 1})).await;
        bystander.expect("pong").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_warned_before_the_idle_deadline_and_touch_or_the_client_extends_it() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.sessions.expiry_warning_s = 1;
    })
    .await;
    let token = session_with(&s, "alice", 2, 3600).await;
    let opened = Instant::now();
    let mut clients = Clients::open(&s, "alice", &token).await;
    let warning = clients.v1.expect("session_expiring").await;
    assert_eq!(warning["expires_in_s"], 1, "{warning}");
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(1800),
        "warned {took:?} after opening with a 2 s window and a 1 s warning"
    );
    assert_eq!(
        clients.seed.expect("session_expiring").await["expires_in_s"],
        1
    );
    assert_eq!(
        clients.sse.until("session_expiring").await.data["expires_in_s"],
        1
    );

    // The app extends the session: no ending at the old deadline, a new warning before the
    // new one, then (left alone) the ending.
    let res = s
        .post(&format!("/v1/sessions/{token}/touch"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let touched = Instant::now();
    assert_eq!(
        clients.v1.expect("session_expiring").await["expires_in_s"],
        1
    );
    assert!(
        touched.elapsed() >= Duration::from_millis(800),
        "warned again only later"
    );
    assert_eq!(
        clients.seed.expect("session_expiring").await["expires_in_s"],
        1
    );
    clients.sse.until("session_expiring").await;

    // The client answers the warning itself: the same extension, from the socket.
    clients
        .v1
        .send(json!({"type": "extend_session", "id": 7}))
        .await;
    let extended = clients.v1.expect("session_extended").await;
    let answered = Instant::now();
    assert_eq!(extended["id"], 7);
    let (_, view) = json(s.get(&format!("/v1/sessions/{token}"))).await;
    assert_eq!(
        extended["idle_expires_at"], view["idle_expires_at"],
        "{view}"
    );
    assert_eq!(
        clients.v1.expect("session_expiring").await["expires_in_s"],
        1
    );
    assert_eq!(
        clients.seed.expect("session_expiring").await["expires_in_s"],
        1
    );
    clients.sse.until("session_expiring").await;
    clients
        .ended("expired_idle", "Session expired (idle)")
        .await;
    let lived = answered.elapsed();
    assert!(
        lived >= Duration::from_millis(1700) && lived < Duration::from_millis(3200),
        "ended {lived:?} after the extension (2 s window)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_frames_keep_the_session_alive_and_heartbeats_do_not() {
    let s = TestServer::start(EngineKind::Memory, |_| {}).await;
    let token = session_with(&s, "alice", 2, 3600).await;
    let mut ws = connect(&s, &format!("/v1/realtime?token={token}"), &[])
        .await
        .open();
    ws.expect("connected").await;
    // Application frames for twice the idle window: the session lives on.
    let opened = Instant::now();
    let mut n = 0;
    while opened.elapsed() < Duration::from_secs(4) {
        n += 1;
        ws.send(json!({"type": "unsubscribe", "id": n, "channel": "user:alice"}))
            .await;
        ws.expect("unsubscribed").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, _) = json(s.get(&format!("/v1/sessions/{token}"))).await;
    assert_eq!(status, 200, "the socket's activity kept the session alive");
    // Heartbeats only: the session idles out all the same.
    let stopped = Instant::now();
    let ended = loop {
        ws.send(json!({"type": "ping", "id": 0})).await;
        let frame = ws.next().await;
        match frame["type"].as_str() {
            Some("pong") => tokio::time::sleep(Duration::from_millis(300)).await,
            _ => break frame,
        }
        assert!(stopped.elapsed() < Duration::from_secs(6), "never ended");
    };
    assert_eq!(
        (&ended["type"], &ended["reason"]),
        (&json!("session_ended"), &json!("expired_idle"))
    );
    assert!(
        stopped.elapsed() < Duration::from_millis(4500),
        "{:?}",
        stopped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_sockets_extend_their_session_too() {
    let s = TestServer::start(EngineKind::Memory, |_| {}).await;
    let token = session_with(&s, "alice", 60, 3600).await;
    let (_, before) = json(s.get(&format!("/v1/sessions/{token}"))).await;
    // Let the clock move past the creation millisecond.
    while sessiond_store::now_ms() <= before["created_at"].as_i64().unwrap() + 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut seed = connect(&s, &format!("/__user-session?token={token}"), &[])
        .await
        .open();
    seed.expect("initial_state").await;
    seed.send(json!({"type": "extend_session"})).await;
    let extended = seed.expect("session_extended").await;
    let (_, after) = json(s.get(&format!("/v1/sessions/{token}"))).await;
    assert_eq!(
        extended["idleExpiresAt"], after["idle_expires_at"],
        "{after}"
    );
    assert!(
        after["idle_expires_at"].as_i64() > before["idle_expires_at"].as_i64(),
        "{before} -> {after}"
    );
}
