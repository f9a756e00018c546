//! Grants end the subscriptions they allowed: at expiry (server-side and signed grants; the
//! client gets `unsubscribed` with reason `grant_expired` and nothing more from the channel),
//! when the app renews the grant first (the subscription lives on), and when the app revokes
//! it (`grant_revoked`). Real server, real WebSocket clients; waiting for expiry is the
//! behaviour under test, so the grants live a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{json, TestServer};
use realtime_support::{connect, session, Ws};
use serde_json::{json, Value};
use sessiond::config::EngineKind;

async fn start() -> TestServer {
    TestServer::start(EngineKind::Memory, |c| {
        c.realtime.grant_keys = vec!["grant-key-of-at-least-32-bytes-long".into()]
    })
    .await
}

async fn socket(s: &TestServer, user: &str, device: &str) -> Ws {
    let token = session(s, user, None).await;
    let path = format!("/v1/realtime?deviceId={device}&token={token}");
    let mut ws = connect(s, &path, &[]).await.open();
    ws.expect("connected").await;
    ws
}

/// Grants `channel` to `user` through the server API.
async fn grant(s: &TestServer, user: &str, channel: &str, ttl_s: Option<u64>) {
    let (status, body) = json(
        s.post("/v1/realtime/grants")
            .json(&json!({"user_id": user, "channel": channel, "publish": true, "ttl_s": ttl_s})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// A signed grant minted by the server.
async fn signed(s: &TestServer, user: &str, channel: &str, ttl_s: u64) -> String {
    let (status, body) = json(
        s.post("/v1/realtime/grant-tokens")
            .json(&json!({"user_id": user, "channel": channel, "ttl_s": ttl_s})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// Subscribes (with a signed grant when given) and consumes the reply and presence state.
async fn subscribe(ws: &mut Ws, channel: &str, grant: Option<&str>) {
    ws.send(json!({"type": "subscribe", "channel": channel, "grant": grant}))
        .await;
    let reply = ws.next().await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    ws.expect("presence_state").await;
}

/// Publishes through the server API.
async fn publish(s: &TestServer, channel: &str, data: Value) {
    let (status, body) = json(
        s.post("/v1/realtime/publish")
            .json(&json!({"channel": channel, "data": data})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Asserts nothing is queued for `ws` (a ping's pong is the very next frame).
async fn nothing_pending(ws: &mut Ws) {
    ws.send(json!({"type": "ping"})).await;
    let next = ws.next().await;
    assert_eq!(next["type"], "pong", "unexpected frame {next}");
}

fn ended(frame: &Value, channel: &str, reason: &str) {
    assert_eq!(
        (&frame["type"], &frame["channel"], &frame["reason"]),
        (&json!("unsubscribed"), &json!(channel), &json!(reason)),
        "{frame}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_grants_end_their_subscriptions() {
    let s = start().await;
    let mut alice = socket(&s, "alice", "laptop").await;
    let mut bob = socket(&s, "bob", "phone").await;
    // Alice: server-side grant for two seconds; bob: a signed grant that outlives it.
    grant(&s, "alice", "room:a", Some(2)).await;
    subscribe(&mut alice, "room:a", None).await;
    let token = signed(&s, "bob", "room:a", 4).await;
    subscribe(&mut bob, "room:a", Some(&token)).await;
    alice.expect("presence_diff").await;

    // Alice's grant runs out: she is told, and the others see her leave.
    ended(&alice.next().await, "room:a", "grant_expired");
    let diff = bob.expect("presence_diff").await;
    assert_eq!(diff["leaves"]["alice"]["metas"][0]["deviceId"], "laptop");
    // Nothing more reaches her from the channel; bob still gets messages.
    publish(&s, "room:a", json!("after alice")).await;
    assert_eq!(bob.expect("message").await["data"], "after alice");
    nothing_pending(&mut alice).await;
    alice
        .send(json!({"type": "publish", "id": 1, "channel": "room:a", "data": 1}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "forbidden");
    // Her grant is gone for good: subscribing again is refused.
    alice
        .send(json!({"type": "subscribe", "id": 2, "channel": "room:a"}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "forbidden");

    // The signed grant ends the same way.
    ended(&bob.next().await, "room:a", "grant_expired");
    publish(&s, "room:a", json!("after bob")).await;
    nothing_pending(&mut bob).await;
    let (_, p) = json(s.get("/v1/realtime/channels/room:a/presence")).await;
    assert_eq!(p["presence"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_grant_keeps_its_subscription() {
    let s = start().await;
    let mut alice = socket(&s, "alice", "laptop").await;
    grant(&s, "alice", "room:b", Some(2)).await;
    subscribe(&mut alice, "room:b", None).await;
    // The app renews the grant (no expiry now) before it runs out.
    grant(&s, "alice", "room:b", None).await;
    // Bob's grant is minted after alice's first one and lives longer than it did, so once
    // bob's has expired, alice's original deadline is past too.
    let mut bob = socket(&s, "bob", "phone").await;
    let token = signed(&s, "bob", "room:b", 3).await;
    subscribe(&mut bob, "room:b", Some(&token)).await;
    ended(&bob.next().await, "room:b", "grant_expired");
    assert!(alice.expect("presence_diff").await["joins"]["bob"].is_object());
    assert!(alice.expect("presence_diff").await["leaves"]["bob"].is_object());
    publish(&s, "room:b", json!("still here")).await;
    assert_eq!(alice.expect("message").await["data"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_grant_ends_every_live_subscription_of_the_user() {
    let s = start().await;
    let mut laptop = socket(&s, "alice", "laptop").await;
    let mut phone = socket(&s, "alice", "phone").await;
    let mut bob = socket(&s, "bob", "tablet").await;
    grant(&s, "alice", "room:r", None).await;
    grant(&s, "bob", "room:r", None).await;
    subscribe(&mut laptop, "room:r", None).await;
    // The phone joined with a signed grant: revoking alice's access ends it too.
    let token = signed(&s, "alice", "room:r", 600).await;
    subscribe(&mut phone, "room:r", Some(&token)).await;
    subscribe(&mut bob, "room:r", None).await;
    laptop.expect("presence_diff").await;
    laptop.expect("presence_diff").await;
    phone.expect("presence_diff").await;

    let res = s
        .delete("/v1/realtime/grants?user_id=alice&channel=room:r")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for ws in [&mut laptop, &mut phone] {
        let mut frames = vec![ws.next().await];
        // The other device's leave may come before this one's own end.
        if frames[0]["type"] == "presence_diff" {
            frames.push(ws.next().await);
        }
        ended(frames.last().unwrap(), "room:r", "grant_revoked");
    }
    for _ in 0..2 {
        assert!(bob.expect("presence_diff").await["leaves"]["alice"].is_object());
    }
    publish(&s, "room:r", json!("bob only")).await;
    assert_eq!(bob.expect("message").await["data"], "bob only");
    nothing_pending(&mut laptop).await;
    nothing_pending(&mut phone).await;
    laptop
        .send(json!({"type": "subscribe", "id": 3, "channel": "room:r"}))
        .await;
    assert_eq!(laptop.expect("error").await["code"], "forbidden");
}
