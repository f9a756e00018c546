//! The realtime hub's lifecycle rules over a real server: limits, logout on all devices and
//! revocation, persistence across a restart, idle eviction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{assert_error, json, TestServer};
use realtime_support::{connect, eventually, session};
use serde_json::json;
use sessiond::config::EngineKind;

fn url(user: &str, token: &str, device: &str) -> String {
    format!("/__user-session?userId={user}&deviceId={device}&token={token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_close_or_refuse_abusive_clients() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.realtime.max_messages_per_s = 5;
        c.realtime.max_message_bytes = 1024;
        c.realtime.max_sockets_per_user = 2;
        c.realtime.max_active_games = 2;
    })
    .await;
    let token = session(&s, "alice", None).await;

    // Messages per second: a burst beyond the bucket closes with 1008.
    let mut ws = connect(&s, &url("alice", &token, "a"), &[]).await.open();
    ws.expect("initial_state").await;
    for _ in 0..20 {
        ws.send(json!({"type": "ping"})).await;
    }
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 1008, "{reason}");

    // Message size: closed with 1009.
    let mut ws = connect(&s, &url("alice", &token, "b"), &[]).await.open();
    ws.expect("initial_state").await;
    ws.send(json!({"type": "join_game", "gameId": "x".repeat(2000)}))
        .await;
    assert_eq!(ws.closed().await.0, 1009);

    // activeGames length.
    let mut ws = connect(&s, &url("alice", &token, "c"), &[]).await.open();
    ws.expect("initial_state").await;
    for game in ["g1", "g2"] {
        ws.send(json!({"type": "join_game", "gameId": game})).await;
        ws.expect("game_joined").await;
    }
    ws.send(json!({"type": "join_game", "gameId": "g3"})).await;
    assert!(ws.expect("error").await["message"]
        .as_str()
        .unwrap()
        .contains("full"));

    // Sockets per user: the third is closed at once with 1013 (a browser can read that,
    // unlike a refused upgrade's status).
    let mut second = connect(&s, &url("alice", &token, "d"), &[]).await.open();
    second.expect("initial_state").await;
    let mut third = connect(&s, &url("alice", &token, "e"), &[]).await.open();
    assert_eq!(
        third.closed().await,
        (1013, "Too many connections for this user".to_string())
    );
    // Another user is not affected.
    let bob = session(&s, "bob", None).await;
    connect(&s, &url("bob", &bob, "x"), &[]).await.open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_closes_every_device_and_revokes_sessions() {
    let s = TestServer::start(EngineKind::Sqlite, |_| {}).await;
    let phone = session(&s, "alice", None).await;
    let laptop = session(&s, "alice", None).await;
    let mut a = connect(&s, &url("alice", &phone, "phone"), &[])
        .await
        .open();
    let mut b = connect(&s, &url("alice", &laptop, "laptop"), &[])
        .await
        .open();
    a.expect("initial_state").await;
    b.expect("initial_state").await;
    a.send(json!({"type": "join_game", "gameId": "g1"})).await;
    a.expect("game_joined").await;
    b.expect("game_joined").await;

    a.send(json!({"type": "logout_all"})).await;
    for ws in [&mut a, &mut b] {
        assert_eq!(
            ws.closed().await,
            (4001, "Logged out from all devices".to_string())
        );
    }
    // Every session is revoked, so reconnecting is refused.
    let (status, body) = connect(&s, &url("alice", &phone, "phone"), &[])
        .await
        .refused();
    assert_error(status, &body, 401, "reconnect after logout_all");
    let (_, listed) = json(s.get("/v1/users/alice/sessions")).await;
    assert_eq!(listed["sessions"], json!([]), "{listed}");
    let (_, st) = json(s.get("/__user-session/state?userId=alice")).await;
    assert_eq!(st["activeGames"], json!([]));
    assert_eq!(st["presence"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_sessions_over_http_closes_live_sockets() {
    let s = TestServer::start(EngineKind::Memory, |_| {}).await;
    let keep = session(&s, "alice", None).await;
    let drop_me = session(&s, "alice", None).await;
    let mut kept = connect(&s, &url("alice", &keep, "kept"), &[]).await.open();
    let mut dropped = connect(&s, &url("alice", &drop_me, "dropped"), &[])
        .await
        .open();
    kept.expect("initial_state").await;
    dropped.expect("initial_state").await;

    // Deleting one session (logging out one device) closes that session's sockets only.
    let single = session(&s, "alice", None).await;
    let mut device = connect(&s, &url("alice", &single, "single"), &[])
        .await
        .open();
    device.expect("initial_state").await;
    let res = s
        .delete(&format!("/v1/sessions/{single}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(device.closed().await.0, 4001);

    // "Log out everywhere else": only the other session's socket closes.
    let (status, _) = json(s.delete(&format!("/v1/users/alice/sessions?except={keep}"))).await;
    assert_eq!(status, 200);
    assert_eq!(dropped.closed().await.0, 4001);
    kept.send(json!({"type": "ping"})).await;
    kept.expect("pong").await;

    // Everything: the remaining socket closes too.
    let (status, _) = json(s.delete("/v1/users/alice/sessions")).await;
    assert_eq!(status, 200);
    assert_eq!(
        kept.closed().await,
        (4001, "Logged out from all devices".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |data: std::path::PathBuf| {
        TestServer::start(EngineKind::Sqlite, move |c| c.data_dir = data)
    };

    let s = start(data.clone()).await;
    let token = session(&s, "alice", None).await;
    let mut ws = connect(&s, &url("alice", &token, "phone"), &[])
        .await
        .open();
    ws.expect("initial_state").await;
    ws.send(json!({"type": "join_game", "gameId": "chess-1"}))
        .await;
    ws.expect("game_joined").await;
    ws.send(json!({"type": "update_presence", "presence": "away"}))
        .await;
    ws.expect("presence_updated").await;
    s.stop().await;
    // The server closed the socket on shutdown.
    assert_eq!(ws.closed().await.0, 1001);

    let s = start(data).await;
    let (_, st) = json(s.get("/__user-session/state?userId=alice")).await;
    assert_eq!(st["userId"], "alice", "userId persisted");
    assert_eq!(st["activeGames"], json!(["chess-1"]));
    assert_eq!(st["presence"], "offline", "no socket survived the restart");
    assert!(st["lastActive"].is_i64());
    let mut ws = connect(&s, &url("alice", &token, "phone"), &[])
        .await
        .open();
    let init = ws.expect("initial_state").await;
    assert_eq!(init["activeGames"], json!(["chess-1"]));
    assert_eq!(init["presence"], "online");
}

async fn resident_users(s: &TestServer) -> u64 {
    let (_, stats) = json(s.get("/v1/realtime/stats")).await;
    stats["resident_users"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_user_state_leaves_memory_and_comes_back() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.runtime.eviction_interval_s = 1;
        c.realtime.idle_evict_s = 1;
    })
    .await;
    let token = session(&s, "alice", None).await;
    let mut ws = connect(&s, &url("alice", &token, "phone"), &[])
        .await
        .open();
    ws.expect("initial_state").await;
    ws.send(json!({"type": "join_game", "gameId": "g1"})).await;
    ws.expect("game_joined").await;
    assert_eq!(resident_users(&s).await, 1);

    // An idle user's state is evicted even while the socket stays open...
    eventually("the idle user's state is evicted", || async {
        resident_users(&s).await == 0
    })
    .await;
    let (_, stats) = json(s.get("/v1/realtime/stats")).await;
    assert_eq!(
        stats["connections"], 1,
        "the socket is not dropped by eviction"
    );
    // ...and comes back from the engine on the next message.
    ws.send(json!({"type": "sync_state"})).await;
    let st = ws.expect("state").await;
    assert_eq!(st["activeGames"], json!(["g1"]));
    assert_eq!(st["userId"], "alice");
    assert_eq!(resident_users(&s).await, 1);

    // The list of connections shows the device.
    let (_, conns) = json(s.get("/v1/realtime/users/alice/connections")).await;
    assert_eq!(conns["connections"][0]["device_id"], "phone");
    assert_eq!(conns["connections"][0]["ip"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_by_the_liveness_timeout() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.realtime.ping_interval_s = 1;
        c.realtime.liveness_timeout_s = 2;
    })
    .await;
    let token = session(&s, "alice", None).await;
    // A client that reads (and so answers the server's pings) stays connected...
    let mut alive = connect(&s, &url("alice", &token, "alive"), &[])
        .await
        .open();
    alive.expect("initial_state").await;
    // ...one that never reads never sends a pong, and is closed.
    let silent = connect(&s, &url("alice", &token, "silent"), &[])
        .await
        .open();
    let connections = || async {
        let (_, conns) = json(s.get("/v1/realtime/users/alice/connections")).await;
        conns["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["device_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(connections().await.len(), 2);
    // Keep the live client reading while the silent one times out.
    let reader = tokio::spawn(async move {
        loop {
            alive.send(json!({"type": "ping"})).await;
            alive.expect("pong").await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    });
    eventually("the silent socket is closed", || async {
        connections().await == vec!["alive".to_string()]
    })
    .await;
    reader.abort();
    drop(silent);
}
