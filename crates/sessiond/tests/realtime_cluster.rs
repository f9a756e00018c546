//! The realtime hub on two sessiond nodes sharing one private redis-server, through real
//! listeners and real WebSocket clients: a publish or notify on one node reaches sockets on
//! the other, a client that reconnects to the other node recovers by offset, and logout-all
//! or a session revocation on one node closes the user's sockets on the other, and a rotation
//! on one node closes the old id's sockets on the other (4004).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{json, TestServer};
use realtime_support::{connect, session, Ws};
use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;

const KEY: &str = "cluster-test-service-key-0123456789";

async fn two_nodes(redis: &RedisServer) -> (TestServer, TestServer) {
    let a = TestServer::start_node(redis, |c| c.api_keys = vec![KEY.into()]).await;
    let b = TestServer::start_node(redis, |c| c.api_keys = vec![KEY.into()]).await;
    (a, b)
}

/// A v1 socket of the session `token`, with its `connected` frame read.
async fn v1(s: &TestServer, token: &str, device: &str) -> Ws {
    let mut ws = connect(
        s,
        &format!("/v1/realtime?token={token}&deviceId={device}"),
        &[],
    )
    .await
    .open();
    ws.expect("connected").await;
    ws
}

/// A seed-protocol socket of `user` with the session `token`, `initial_state` read.
async fn seed(s: &TestServer, user: &str, token: &str) -> Ws {
    let mut ws = connect(
        s,
        &format!("/__user-session?userId={user}&token={token}"),
        &[],
    )
    .await
    .open();
    ws.expect("initial_state").await;
    ws
}

/// Subscribes and returns the `subscribed` reply (its `presence_state` is read too).
async fn subscribe(ws: &mut Ws, channel: &str, since: Option<Value>) -> Value {
    let mut frame = json!({"type": "subscribe", "id": 1, "channel": channel});
    if let Some(since) = since {
        frame["since"] = since;
    }
    ws.send(frame).await;
    let reply = ws.expect("subscribed").await;
    ws.expect("presence_state").await;
    reply
}

async fn publish(s: &TestServer, channel: &str, data: Value) -> u64 {
    let (status, body) = json(
        s.post("/v1/realtime/publish")
            .bearer_auth(KEY)
            .json(&json!({"channel": channel, "data": data})),
    )
    .await;
    assert_eq!(status, 200, "publish: {body}");
    body["offset"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_and_recover_across_nodes() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;
    let alice = session(&a, "alice", Some(KEY)).await;

    // A publish on A reaches a subscriber on B.
    let mut on_b = v1(&b, &alice, "phone").await;
    let sub = subscribe(&mut on_b, "user:alice", None).await;
    let epoch = sub["epoch"].clone();
    assert_eq!(sub["offset"], 0);
    assert_eq!(publish(&a, "user:alice", json!({"n": 1})).await, 1);
    let m = on_b.expect("message").await;
    assert_eq!(
        (m["offset"].clone(), m["data"].clone()),
        (json!(1), json!({"n": 1}))
    );

    // A notify and a server `send` on A reach a seed socket on B.
    let mut seed_b = seed(&b, "alice", &alice).await;
    let (status, body) = json(
        a.post("/__user-session/notify?userId=alice")
            .bearer_auth(KEY)
            .json(&json!({"type": "notification", "message": "hi"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seed_b.expect("notification").await["message"], "hi");
    // (notify goes to every socket of the user, whatever its protocol)
    assert_eq!(on_b.expect("notification").await["message"], "hi");
    let (status, body) = json(
        a.post("/v1/realtime/users/alice/send")
            .bearer_auth(KEY)
            .json(&json!({"data": {"type": "nudge"}})),
    )
    .await;
    assert_eq!((status, body["offset"].clone()), (200, json!(2)), "{body}");
    assert_eq!(seed_b.expect("nudge").await["type"], "nudge");
    assert_eq!(on_b.expect("message").await["offset"], 2);

    // The client goes away after offset 2; two messages are published on A meanwhile; it
    // reconnects to A and recovers exactly what it missed, then gets live messages from B.
    on_b.close().await;
    publish(&a, "user:alice", json!({"n": 3})).await;
    publish(&b, "user:alice", json!({"n": 4})).await;
    let mut on_a = v1(&a, &alice, "phone").await;
    let since = json!({"epoch": epoch, "offset": 2});
    let sub = subscribe(&mut on_a, "user:alice", Some(since)).await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["epoch"], epoch);
    let got: Vec<Value> = sub["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!([m["offset"], m["data"]["n"]]))
        .collect();
    assert_eq!(got, [json!([3, 3]), json!([4, 4])]);
    assert_eq!(publish(&b, "user:alice", json!({"n": 5})).await, 5);
    assert_eq!(on_a.expect("message").await["offset"], 5);

    // A client publish on A is seen on B, and the publisher gets its message first.
    let mut again_b = v1(&b, &alice, "tab").await;
    subscribe(&mut again_b, "user:alice", None).await;
    // (presence is cluster-wide: A's subscriber sees B's join first)
    let join = on_a.expect("presence_diff").await;
    assert_eq!(
        join["joins"]["alice"]["metas"][0]["deviceId"], "tab",
        "{join}"
    );
    on_a.send(json!({"type": "publish", "id": 9, "channel": "user:alice", "data": "x"}))
        .await;
    assert_eq!(on_a.expect("message").await["offset"], 6);
    assert_eq!(on_a.expect("published").await["offset"], 6);
    let m = again_b.expect("message").await;
    assert_eq!(
        (m["offset"].clone(), m["from"].clone()),
        (json!(6), json!("alice"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_revocation_close_sockets_on_every_node() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;

    // DELETE /v1/users/alice/sessions on A closes alice's sockets on B; bob's stays.
    let s1 = session(&a, "alice", Some(KEY)).await;
    let s2 = session(&a, "alice", Some(KEY)).await;
    let bob = session(&a, "bob", Some(KEY)).await;
    let mut seed_b = seed(&b, "alice", &s1).await;
    let mut v1_b = v1(&b, &s2, "laptop").await;
    let mut bob_b = v1(&b, &bob, "bob-phone").await;
    let (status, body) = json(a.delete("/v1/users/alice/sessions").bearer_auth(KEY)).await;
    assert_eq!(status, 200, "{body}");
    let logout = (4001, "Logged out from all devices".to_string());
    assert_eq!(seed_b.closed().await, logout);
    assert_eq!(v1_b.closed().await, logout);
    bob_b.send(json!({"type": "ping", "id": 1})).await;
    assert_eq!(bob_b.expect("pong").await["id"], 1);

    // logout_all from a device on A closes the user's devices on B.
    let s3 = session(&b, "alice", Some(KEY)).await;
    let mut on_b = seed(&b, "alice", &s3).await;
    let mut on_a = seed(&a, "alice", &s3).await;
    on_a.send(json!({"type": "logout_all"})).await;
    assert_eq!(on_a.closed().await, logout);
    assert_eq!(on_b.closed().await, logout);
    // The sessions are gone on every node.
    for node in [&a, &b] {
        let refused = connect(
            node,
            &format!("/__user-session?userId=alice&token={s3}"),
            &[],
        )
        .await
        .refused();
        assert_eq!(refused.0, 401);
    }
    // Seed frames of one device reach the user's devices on the other node.
    let s4 = session(&a, "carol", Some(KEY)).await;
    let mut carol_a = seed(&a, "carol", &s4).await;
    let mut carol_b = seed(&b, "carol", &s4).await;
    carol_a
        .send(json!({"type": "join_game", "gameId": "g1"}))
        .await;
    assert_eq!(carol_a.expect("game_joined").await["gameId"], "g1");
    let joined = carol_b.expect("game_joined").await;
    assert_eq!(joined["activeGames"], json!(["g1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_bus_connection_resyncs_its_sockets() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;
    let alice = session(&a, "alice", Some(KEY)).await;
    let mut on_b = v1(&b, &alice, "phone").await;
    let epoch = subscribe(&mut on_b, "user:alice", None).await["epoch"].clone();
    publish(&a, "user:alice", json!({"n": 1})).await;
    assert_eq!(on_b.expect("message").await["offset"], 1);

    // Every node's subscriber connection is cut: deliveries may be missed until it is back,
    // so B closes the sockets of the channels it mirrors once it has resubscribed.
    let killed = std::process::Command::new("redis-cli")
        .args(["-u", &redis.url(), "CLIENT", "KILL", "TYPE", "pubsub"])
        .output()
        .expect("redis-cli runs");
    assert!(killed.status.success(), "{killed:?}");
    let (code, reason) = on_b.closed().await;
    assert_eq!((code, reason.as_str()), (1013, "Realtime bus resync"));

    // The client reconnects to B and recovers what was published meanwhile, then live.
    publish(&a, "user:alice", json!({"n": 2})).await;
    let mut again = v1(&b, &alice, "phone").await;
    let sub = subscribe(
        &mut again,
        "user:alice",
        Some(json!({"epoch": epoch, "offset": 1})),
    )
    .await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["messages"][0]["offset"], 2);
    publish(&a, "user:alice", json!({"n": 3})).await;
    assert_eq!(again.expect("message").await["offset"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_revocation_on_one_node_ends_subscriptions_on_the_other() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;
    let alice = session(&a, "alice", Some(KEY)).await;
    let (status, body) = json(
        a.post("/v1/realtime/grants")
            .bearer_auth(KEY)
            .json(&json!({"user_id": "alice", "channel": "room:lobby", "publish": true})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut on_b = v1(&b, &alice, "phone").await;
    subscribe(&mut on_b, "room:lobby", None).await;
    let (status, _) = json(
        a.delete("/v1/realtime/grants?user_id=alice&channel=room:lobby")
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 204);
    let ended = on_b.expect("unsubscribed").await;
    assert_eq!(
        (ended["channel"].clone(), ended["reason"].clone()),
        (json!("room:lobby"), json!("grant_revoked"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_on_one_node_closes_the_old_ids_sockets_on_the_other() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis).await;
    let old = session(&a, "alice", Some(KEY)).await;
    let other = session(&a, "alice", Some(KEY)).await;
    let mut on_b = v1(&b, &old, "phone").await;
    let mut seed_on_b = seed(&b, "alice", &old).await;
    let mut bystander = v1(&b, &other, "laptop").await;

    let started = std::time::Instant::now();
    let (status, rotated) = json(
        a.post(&format!("/v1/sessions/{old}/rotate"))
            .bearer_auth(KEY)
            .json(&json!({"data": {"role": "member"}})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let closed = (4004, "Session rotated".to_string());
    assert_eq!(on_b.closed().await, closed);
    assert_eq!(seed_on_b.closed().await, closed);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));

    // B answers for the old id as for any dead one; the new id works there; the other
    // session's socket stays.
    let (status, _) = json(b.get(&format!("/v1/sessions/{old}")).bearer_auth(KEY)).await;
    assert_eq!(status, 404);
    let (status, _) = connect(&b, &format!("/v1/realtime?token={old}"), &[])
        .await
        .refused();
    assert_eq!(status, 401);
    let new = rotated["id"].as_str().unwrap();
    let (status, got) = json(b.get(&format!("/v1/sessions/{new}")).bearer_auth(KEY)).await;
    assert_eq!((status, &got["data"]["role"]), (200, &json!("member")));
    v1(&b, new, "phone").await;
    bystander.send(json!({"type": "ping", "id": 1})).await;
    bystander.expect("pong").await;
}
