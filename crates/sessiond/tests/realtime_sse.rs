//! The SSE fallback over a real server: events named after frame types, recovery through
//! `Last-Event-ID`, auth refusals, the logout event when sessions are revoked, and grant expiry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{assert_error, json, TestServer};
use realtime_support::sse::open;
use realtime_support::{eventually, session};
use serde_json::{json, Value};
use sessiond::config::EngineKind;

async fn connections(s: &TestServer) -> u64 {
    let (_, stats) = json(s.get("/v1/realtime/stats")).await;
    stats["connections"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_recovers_and_logs_out() {
    let s = TestServer::start(EngineKind::Memory, |_| {}).await;
    let token = session(&s, "alice", None).await;
    let q = format!("channels=user:alice&deviceId=old-proxy&token={token}");

    let (status, body) = open(&s, "channels=user:alice", None).await.err().unwrap();
    assert_error(status, &body, 401, "no credentials");
    let (status, body) = open(&s, &format!("channels=user:bob&token={token}"), None)
        .await
        .err()
        .unwrap();
    assert_error(status, &body, 403, "another user's channel");
    let (status, body) = open(&s, &format!("token={token}"), None)
        .await
        .err()
        .unwrap();
    assert_error(status, &body, 400, "no channel");

    let mut sse = open(&s, &q, None).await.unwrap();
    let sub = sse.expect("subscribed").await;
    assert_eq!(sub.data["channel"], "user:alice");
    sse.expect("presence_state").await;
    let send = |n: i64| {
        s.post("/v1/realtime/users/alice/send")
            .json(&json!({"data": {"n": n}}))
            .send()
    };
    send(1).await.unwrap();
    let m = sse.expect("message").await;
    assert_eq!(m.data["data"]["n"], 1);
    let last_id = m.id.expect("message events carry an id");
    let (_, conns) = json(s.get("/v1/realtime/users/alice/connections")).await;
    assert_eq!(conns["connections"][0]["protocol"], "sse");

    // The client goes away; messages keep coming; it comes back with Last-Event-ID.
    drop(sse);
    eventually("the SSE connection is unregistered", || async {
        connections(&s).await == 0
    })
    .await;
    send(2).await.unwrap();
    send(3).await.unwrap();
    let mut sse = open(&s, &q, Some(&last_id)).await.unwrap();
    let sub = sse.expect("subscribed").await;
    assert_eq!(sub.data["recovered"], true, "{:?}", sub.data);
    let missed: Vec<Value> = sub.data["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["n"].clone())
        .collect();
    assert_eq!(missed, vec![json!(2), json!(3)]);
    sse.expect("presence_state").await;

    // Revoking the user's sessions ends the stream with a logout event.
    let (status, _) = json(s.delete("/v1/users/alice/sessions")).await;
    assert_eq!(status, 200);
    let ended = sse.expect("session_ended").await;
    assert_eq!(ended.data["reason"], "revoked");
    let logout = sse.expect("logout").await;
    assert_eq!(logout.data["code"], 4001);
    assert_eq!(logout.data["reason"], "Logged out from all devices");
    assert!(sse.next().await.is_none(), "the stream ends after logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_subscriptions_end_when_their_grant_expires() {
    let s = TestServer::start(EngineKind::Memory, |_| {}).await;
    let token = session(&s, "alice", None).await;
    let (status, body) = json(
        s.post("/v1/realtime/grants")
            .json(&json!({"user_id": "alice", "channel": "room:short", "ttl_s": 2})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let q = format!("channels=room:short,user:alice&token={token}");
    let mut sse = open(&s, &q, None).await.unwrap();
    for _ in 0..2 {
        sse.expect("subscribed").await;
        sse.expect("presence_state").await;
    }
    let end = sse.expect("unsubscribed").await;
    assert_eq!(
        (end.data["channel"].clone(), end.data["reason"].clone()),
        (json!("room:short"), json!("grant_expired"))
    );
    // The room is no longer delivered; the personal channel still is.
    for (channel, n) in [("room:short", 1), ("user:alice", 2)] {
        let (status, _) = json(
            s.post("/v1/realtime/publish")
                .json(&json!({"channel": channel, "data": n})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let m = sse.expect("message").await;
    assert_eq!(
        (m.data["channel"].clone(), m.data["data"].clone()),
        (json!("user:alice"), json!(2))
    );
}
