//! Seed C's user-session protocol over a real server and real WebSocket clients: the two-device
//! flow, the HTTP endpoints, and the fixes (auth, validation, in-memory pong).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{assert_error, json, TestServer};
use realtime_support::{connect, eventually, session};
use serde_json::{json, Value};
use sessiond::config::EngineKind;
use tokio_tungstenite::tungstenite::Message;

async fn state(s: &TestServer, user: &str) -> Value {
    let (status, body) = json(s.get(&format!("/__user-session/state?userId={user}"))).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_of_one_user_share_state_and_presence() {
    for engine in common::engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let token = session(&s, "alice", None).await;

        // Never seen: no lastActive (seed C said "now"), offline, userId reported.
        let fresh = state(&s, "alice").await;
        assert_eq!(fresh["userId"], "alice");
        assert_eq!(fresh["lastActive"], Value::Null);
        assert_eq!(fresh["isHibernating"], true);

        let mut a = connect(
            &s,
            &format!("/__user-session?userId=alice&deviceId=phone&token={token}"),
            &[],
        )
        .await
        .open();
        let init = a.expect("initial_state").await;
        assert_eq!(init["userId"], "alice");
        assert_eq!(init["deviceId"], "phone");
        assert_eq!(init["activeGames"], json!([]));
        assert_eq!(init["presence"], "online", "first socket sets online");
        assert!(init["lastActive"].is_i64());

        let auth = format!("Bearer {token}");
        let mut b = connect(
            &s,
            "/__user-session?deviceId=laptop",
            &[("authorization", &auth)],
        )
        .await
        .open();
        let init = b.expect("initial_state").await;
        assert_eq!(init["userId"], "alice", "user taken from the session");
        assert_eq!(init["deviceId"], "laptop");

        // join_game: broadcast to both, sender included.
        a.send(json!({"type": "join_game", "gameId": "g1"})).await;
        for ws in [&mut a, &mut b] {
            let f = ws.expect("game_joined").await;
            assert_eq!(f["gameId"], "g1");
            assert_eq!(f["activeGames"], json!(["g1"]));
        }
        // A duplicate is acknowledged to its sender only.
        a.send(json!({"type": "join_game", "gameId": "g1"})).await;
        let f = a.expect("game_joined").await;
        assert_eq!(f["alreadyJoined"], true);

        // ping: pong to the sender only.
        a.send(json!({"type": "ping"})).await;
        a.expect("pong").await;

        // Presence: validated, then broadcast.
        b.send(json!({"type": "update_presence", "presence": "sleeping"}))
            .await;
        let err = b.expect("error").await;
        assert!(err["message"].as_str().unwrap().contains("presence"));
        b.send(json!({"type": "update_presence", "presence": "away"}))
            .await;
        for ws in [&mut b, &mut a] {
            assert_eq!(ws.expect("presence_updated").await["presence"], "away");
        }

        b.send(json!({"type": "sync_state"})).await;
        let st = b.expect("state").await;
        assert_eq!(st["userId"], "alice");
        assert_eq!(st["activeGames"], json!(["g1"]));
        assert_eq!(st["presence"], "away");

        // leave_game of a game not joined: only the sender hears, nothing is broadcast.
        b.send(json!({"type": "leave_game", "gameId": "nope"}))
            .await;
        assert_eq!(b.expect("game_left").await["notJoined"], true);
        a.send(json!({"type": "leave_game", "gameId": "g1"})).await;
        for ws in [&mut a, &mut b] {
            let f = ws.expect("game_left").await;
            assert_eq!(f["gameId"], "g1");
            assert_eq!(f["activeGames"], json!([]));
            assert!(f.get("notJoined").is_none());
        }

        // Invalid JSON, non-object JSON and binary frames get seed C's error.
        a.send_raw(Message::Text("{not json".into())).await;
        assert_eq!(
            a.expect("error").await["message"],
            "Failed to process message"
        );
        a.send_raw(Message::Text("[1]".into())).await;
        assert_eq!(
            a.expect("error").await["message"],
            "Failed to process message"
        );
        a.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
        assert_eq!(
            a.expect("error").await["message"],
            "Failed to process message"
        );
        a.send(json!({"type": "join_game"})).await;
        assert!(a.expect("error").await["message"]
            .as_str()
            .unwrap()
            .contains("gameId"));
        a.send(json!({"type": "teleport"})).await;
        a.expect("error").await;

        // HTTP: state while connected; notification broadcast as-is.
        let st = state(&s, "alice").await;
        assert_eq!(st["connectedDevices"], 2);
        assert_eq!(st["isHibernating"], false);
        assert_eq!(st["presence"], "away");
        let note = json!({"type": "notification", "message": {"title": "hi"}, "extra": 1});
        let (status, body) = json(s.post("/__user-session/notify?userId=alice").json(&note)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["delivered"], 2);
        assert_eq!(a.next().await, note);
        assert_eq!(b.next().await, note);
        let (status, body) = json(
            s.post("/__user-session/notify?userId=alice")
                .json(&json!({"type": "other"})),
        )
        .await;
        assert_error(status, &body, 400, "notify needs type notification");

        // The last socket closing makes the user offline.
        a.close().await;
        eventually("one device left", || async {
            state(&s, "alice").await["connectedDevices"] == 1
        })
        .await;
        assert_eq!(state(&s, "alice").await["presence"], "away");
        b.close().await;
        eventually("offline after the last socket", || async {
            let st = state(&s, "alice").await;
            st["isHibernating"] == true && st["presence"] == "offline"
        })
        .await;
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_belong_to_authenticated_users() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.api_keys = vec!["svc-key-0123456789".into()]
    })
    .await;
    let alice = session(&s, "alice", Some("svc-key-0123456789")).await;
    let bob = session(&s, "bob", Some("svc-key-0123456789")).await;

    let (status, body) = connect(&s, "/__user-session?userId=alice", &[])
        .await
        .refused();
    assert_error(status, &body, 401, "no credentials");
    let (status, body) = connect(&s, "/__user-session?userId=alice&token=forged", &[])
        .await
        .refused();
    assert_error(status, &body, 401, "unknown token");
    let (status, body) = connect(
        &s,
        &format!("/__user-session?userId=alice&token={bob}"),
        &[],
    )
    .await
    .refused();
    assert_error(status, &body, 403, "another user's id");

    // A browser sends the session cookie.
    let cookie = format!("theme=dark; sessiond_session={alice}");
    let mut ws = connect(&s, "/__user-session?userId=alice", &[("cookie", &cookie)])
        .await
        .open();
    assert_eq!(ws.expect("initial_state").await["userId"], "alice");

    // A service key (in Authorization only) acts for any user; without userId it is a 400.
    let service = [("authorization", "Bearer svc-key-0123456789")];
    let mut svc = connect(&s, "/__user-session?userId=alice", &service)
        .await
        .open();
    svc.expect("initial_state").await;
    let (status, body) = connect(&s, "/__user-session", &service).await.refused();
    assert_error(status, &body, 400, "service without userId");
    let (status, body) = connect(
        &s,
        "/__user-session?userId=alice&token=svc-key-0123456789",
        &[],
    )
    .await
    .refused();
    assert_error(
        status,
        &body,
        401,
        "a service key is not accepted in the query",
    );

    // Not an upgrade: a JSON 400 after auth.
    let (status, body) = json(s.get(&format!("/__user-session?token={alice}"))).await;
    assert_error(status, &body, 400, "plain GET");

    // The HTTP endpoints need the service key: a user's own session is not enough.
    let (status, body) = json(s.get("/__user-session/state?userId=alice")).await;
    assert_error(status, &body, 401, "state without key");
    let (status, body) = json(
        s.get("/__user-session/state?userId=alice")
            .bearer_auth(&alice),
    )
    .await;
    assert_error(status, &body, 403, "state with a user session");
    let (status, body) = json(
        s.post("/__user-session/clear?userId=alice")
            .bearer_auth(&alice),
    )
    .await;
    assert_error(status, &body, 403, "clear with a user session");
    let (status, body) = json(
        s.get("/__user-session/state?userId=alice")
            .bearer_auth("svc-key-0123456789"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["connectedDevices"], 2);

    // Clear: state gone and sockets closed.
    let (status, body) = json(
        s.post("/__user-session/clear?userId=alice")
            .bearer_auth("svc-key-0123456789"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert_eq!(ws.closed().await.0, 4002);
    assert_eq!(svc.closed().await.0, 4002);
    eventually("sockets gone after clear", || async {
        let (_, body) = json(
            s.get("/__user-session/state?userId=alice")
                .bearer_auth("svc-key-0123456789"),
        )
        .await;
        body["isHibernating"] == true
    })
    .await;
    let (_, body) = json(
        s.get("/__user-session/state?userId=alice")
            .bearer_auth("svc-key-0123456789"),
    )
    .await;
    assert_eq!(body["activeGames"], json!([]));
    assert_eq!(
        body["lastActive"],
        Value::Null,
        "cleared state stays cleared"
    );
}
