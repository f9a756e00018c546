//! Realtime presence on two sessiond nodes sharing one private redis-server, through real
//! listeners, real WebSocket clients and a real webhook receiver: a user's devices, seed C's
//! online state, channel metas, the per-user limit and the disconnect API span both nodes;
//! online/offline webhooks fire once per transition; and the sockets of a node killed with
//! SIGKILL leave presence within the documented bound (`presence_ttl_s`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/binary.rs"]
mod binary;
mod common;
mod realtime_support;

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{json, TestServer};
use realtime_support::{connect, connect_at, eventually, session, Connect, Ws};
use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;

const KEY: &str = "cluster-test-service-key-0123456789";
const HOOK_KEY: &str = "hook-key-of-at-least-32-bytes-long!";
const DEBOUNCE_MS: u64 = 800;

/// Webhook bodies received so far.
type Hooks = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver on a loopback port that records every event and answers 200.
async fn receiver() -> (String, Hooks) {
    let hooks = Hooks::default();
    let seen = hooks.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hooks)
}

/// The event types delivered for `user`, in arrival order.
fn events_of(hooks: &Hooks, user: &str) -> Vec<String> {
    hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["user_id"] == user)
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `user`'s events are exactly `want`, then watches them stay so for three
/// debounce periods (a second node announcing the same transition would show up there).
async fn events_settle_to(hooks: &Hooks, user: &str, want: &[&str]) {
    eventually(&format!("{user}'s events are {want:?}"), || async {
        events_of(hooks, user) == want
    })
    .await;
    let until = Instant::now() + Duration::from_millis(3 * DEBOUNCE_MS + 500);
    while Instant::now() < until {
        assert_eq!(events_of(hooks, user), want, "no further event for {user}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn two_nodes(redis: &RedisServer, hook: &str, per_user: usize) -> (TestServer, TestServer) {
    let tweak = |c: &mut sessiond::config::Config| {
        c.api_keys = vec![KEY.into()];
        c.realtime.max_sockets_per_user = per_user;
        c.realtime.events.debounce_ms = DEBOUNCE_MS;
        c.realtime.events.webhook_url = hook.to_string();
        c.realtime.events.webhook_keys = vec![HOOK_KEY.into()];
        c.realtime.events.webhook_allow_http = true;
        c.realtime.events.webhook_allowed_networks = vec!["127.0.0.0/8".into()];
    };
    let a = TestServer::start_node(redis, tweak).await;
    let b = TestServer::start_node(redis, tweak).await;
    (a, b)
}

async fn seed(s: &TestServer, user: &str, token: &str) -> Ws {
    let path = format!("/__user-session?userId={user}&token={token}");
    let mut ws = connect(s, &path, &[]).await.open();
    ws.expect("initial_state").await;
    ws
}

async fn state(s: &TestServer, user: &str) -> Value {
    let (status, body) = json(
        s.get(&format!("/__user-session/state?userId={user}"))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn connection_ids(s: &TestServer, user: &str) -> Vec<String> {
    let path = format!("/v1/realtime/users/{user}/connections");
    let (status, body) = json(s.get(&path).bearer_auth(KEY)).await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> = body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn grant(s: &TestServer, user: &str, channel: &str) {
    let (status, body) = json(
        s.post("/v1/realtime/grants")
            .bearer_auth(KEY)
            .json(&json!({"user_id": user, "channel": channel})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// The users of a presence map, sorted, each with its number of metas.
fn users(presence: &Value) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = presence
        .as_object()
        .unwrap()
        .iter()
        .map(|(u, v)| (u.clone(), v["metas"].as_array().unwrap().len()))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_on_two_nodes_is_one_presence_with_one_event_per_transition() {
    let redis = RedisServer::start();
    let (hook, hooks) = receiver().await;
    let (a, b) = two_nodes(&redis, &hook, 16).await;
    let token = session(&a, "alice", Some(KEY)).await;

    let phone = seed(&a, "alice", &token).await;
    let laptop = seed(&b, "alice", &token).await;
    for node in [&a, &b] {
        let st = state(node, "alice").await;
        assert_eq!(
            (st["presence"].clone(), st["connectedDevices"].clone()),
            (json!("online"), json!(2)),
            "{st}"
        );
        assert_eq!(connection_ids(node, "alice").await.len(), 2);
    }
    assert_eq!(
        connection_ids(&a, "alice").await,
        connection_ids(&b, "alice").await
    );
    events_settle_to(&hooks, "alice", &["user.online"]).await;

    // One device closes: still online on both nodes, no offline event.
    phone.close().await;
    for node in [&a, &b] {
        eventually("alice has one device left", || async {
            state(node, "alice").await["connectedDevices"] == 1
        })
        .await;
        assert_eq!(state(node, "alice").await["presence"], "online");
    }
    // The last one closes: offline everywhere, one offline event in all.
    laptop.close().await;
    for node in [&a, &b] {
        eventually("alice is offline", || async {
            let st = state(node, "alice").await;
            st["connectedDevices"] == 0 && st["presence"] == "offline"
        })
        .await;
    }
    events_settle_to(&hooks, "alice", &["user.online", "user.offline"]).await;

    // A reload across nodes (close on B, reopen on A within the debounce) announces nothing.
    let on_b = seed(&b, "alice", &token).await;
    events_settle_to(
        &hooks,
        "alice",
        &["user.online", "user.offline", "user.online"],
    )
    .await;
    on_b.close().await;
    let back = seed(&a, "alice", &token).await;
    events_settle_to(
        &hooks,
        "alice",
        &["user.online", "user.offline", "user.online"],
    )
    .await;
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_metas_limits_and_disconnects_span_the_nodes() {
    let redis = RedisServer::start();
    let (hook, _hooks) = receiver().await;
    let (a, b) = two_nodes(&redis, &hook, 2).await;
    let alice = session(&a, "alice", Some(KEY)).await;
    let bob = session(&a, "bob", Some(KEY)).await;
    grant(&a, "alice", "room:r").await;
    grant(&a, "bob", "room:r").await;

    // alice subscribes on A, then bob on B: bob's presence_state has alice from A, and A's
    // socket gets bob's join.
    let open = |s: &TestServer, token: &str, device: &str| {
        let path = format!("/v1/realtime?token={token}&deviceId={device}");
        let addr = s.addr.to_string();
        async move {
            let mut ws = connect_at(&addr, &path, &[]).await.open();
            ws.expect("connected").await;
            ws
        }
    };
    let mut alice_a = open(&a, &alice, "alice-phone").await;
    alice_a
        .send(json!({"type": "subscribe", "id": 1, "channel": "room:r", "meta": {"mood": "ok"}}))
        .await;
    alice_a.expect("subscribed").await;
    alice_a.expect("presence_state").await;
    let mut bob_b = open(&b, &bob, "bob-phone").await;
    bob_b
        .send(json!({"type": "subscribe", "id": 1, "channel": "room:r"}))
        .await;
    bob_b.expect("subscribed").await;
    let st = bob_b.expect("presence_state").await;
    assert_eq!(
        users(&st["presence"]),
        [("alice".into(), 1), ("bob".into(), 1)],
        "{st}"
    );
    assert_eq!(st["presence"]["alice"]["metas"][0]["mood"], "ok");
    let diff = alice_a.expect("presence_diff").await;
    assert_eq!(users(&diff["joins"]), [("bob".into(), 1)], "{diff}");
    for node in [&a, &b] {
        let (status, body) = json(
            node.get("/v1/realtime/channels/room:r/presence")
                .bearer_auth(KEY),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            users(&body["presence"]),
            [("alice".into(), 1), ("bob".into(), 1)]
        );
    }
    // A meta update on A reaches B as a leave of the old meta and a join of the new one.
    alice_a
        .send(json!({"type": "presence_update", "id": 2, "channel": "room:r", "meta": {"mood": "busy"}}))
        .await;
    alice_a.expect("presence_diff").await;
    alice_a.expect("presence_updated").await;
    let diff = bob_b.expect("presence_diff").await;
    assert_eq!(diff["joins"]["alice"]["metas"][0]["mood"], "busy", "{diff}");
    assert_eq!(diff["leaves"]["alice"]["metas"][0]["mood"], "ok", "{diff}");

    // The per-user limit (2) counts alice's sockets on both nodes.
    let _alice_b = open(&b, &alice, "alice-laptop").await;
    match connect(
        &a,
        &format!("/v1/realtime?token={alice}&deviceId=third"),
        &[],
    )
    .await
    {
        Connect::Open(ws) => {
            let mut ws = *ws;
            assert_eq!(
                ws.closed().await,
                (1013, "Too many connections for this user".into())
            );
        }
        Connect::Refused(status, body) => assert_eq!(status, 429, "{body}"),
    }

    // The disconnect API on B closes alice's socket on A; B's subscriber sees her leave.
    let on_a: Vec<String> = {
        let (_, body) = json(
            a.get("/v1/realtime/users/alice/connections")
                .bearer_auth(KEY),
        )
        .await;
        body["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["device_id"] == "alice-phone")
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(on_a.len(), 1);
    let (status, _) = json(
        b.delete(&format!("/v1/realtime/connections/{}", on_a[0]))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        alice_a.closed().await,
        (4003, "Disconnected by server".into())
    );
    let diff = bob_b.expect("presence_diff").await;
    assert_eq!(users(&diff["leaves"]), [("alice".into(), 1)], "{diff}");
    let (status, body) = json(b.delete("/v1/realtime/connections/12345").bearer_auth(KEY)).await;
    assert_eq!(status, 404, "{body}");
}

/// A `sessiond serve` on the Redis engine with a short presence lease; SIGKILL on drop.
fn spawn_node(redis: &RedisServer, hook: &str, dir: &std::path::Path) -> binary::Binary {
    let config = dir.join("sessiond.toml");
    std::fs::write(
        &config,
        format!(
            "[realtime]\npresence_ttl_s = 2\n[realtime.events]\ndebounce_ms = {DEBOUNCE_MS}\n\
             webhook_url = \"{hook}\"\nwebhook_keys = [\"{HOOK_KEY}\"]\n\
             webhook_allow_http = true\nwebhook_allowed_networks = [\"127.0.0.0/8\"]\n"
        ),
    )
    .unwrap();
    let url = redis.url();
    let data = dir.join("data");
    let args = [
        OsStr::new("--engine"),
        OsStr::new("redis"),
        OsStr::new("--redis-url"),
        OsStr::new(&url),
        OsStr::new("--api-key"),
        OsStr::new(KEY),
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ];
    binary::Binary::start(args, &[binary::shared_signing_key()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sockets_of_a_killed_node_leave_presence_within_the_lease() {
    let redis = RedisServer::start();
    let (hook, hooks) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = spawn_node(&redis, &hook, &dir_a);
    let b = spawn_node(&redis, &hook, &dir_b);
    let http = reqwest::Client::new();
    let host = |n: &binary::Binary| n.base.trim_start_matches("http://").to_string();
    let new_session = |user: &str| {
        let req = http
            .post(a.url("/v1/sessions"))
            .bearer_auth(KEY)
            .json(&json!({"user_id": user}));
        async move {
            let (status, body) = json(req).await;
            assert_eq!(status, 201, "{body}");
            body["id"].as_str().unwrap().to_string()
        }
    };
    let (dora, eve) = (new_session("dora").await, new_session("eve").await);
    for user in ["dora", "eve"] {
        let req = http
            .post(a.url("/v1/realtime/grants"))
            .bearer_auth(KEY)
            .json(&json!({"user_id": user, "channel": "room:k"}));
        assert_eq!(json(req).await.0, 201);
    }
    // eve watches the room from A; dora is in it from B.
    let mut eve_a = connect_at(&host(&a), &format!("/v1/realtime?token={eve}"), &[])
        .await
        .open();
    eve_a.expect("connected").await;
    eve_a
        .send(json!({"type": "subscribe", "id": 1, "channel": "room:k"}))
        .await;
    eve_a.expect("subscribed").await;
    eve_a.expect("presence_state").await;
    let mut dora_b = connect_at(&host(&b), &format!("/v1/realtime?token={dora}"), &[])
        .await
        .open();
    dora_b.expect("connected").await;
    dora_b
        .send(json!({"type": "subscribe", "id": 1, "channel": "room:k"}))
        .await;
    dora_b.expect("subscribed").await;
    dora_b.expect("presence_state").await;
    assert_eq!(
        users(&eve_a.expect("presence_diff").await["joins"]),
        [("dora".into(), 1)]
    );
    events_settle_to(&hooks, "dora", &["user.online"]).await;

    b.kill();
    let killed = Instant::now();
    let connections = || {
        let req = http
            .get(a.url("/v1/realtime/users/dora/connections"))
            .bearer_auth(KEY);
        async move { json(req).await.1["connections"].as_array().unwrap().len() }
    };
    eventually("dora's socket on the dead node is gone", || async {
        connections().await == 0
    })
    .await;
    // The bound: one lease (2 s) after B's last renewal, which was before the kill (plus
    // 1 s for the polling requests on a busy machine).
    let gone_after = killed.elapsed();
    assert!(
        gone_after <= Duration::from_millis(2_000 + 1_000),
        "{gone_after:?}"
    );
    let req = http
        .get(a.url("/v1/realtime/channels/room:k/presence"))
        .bearer_auth(KEY);
    assert_eq!(users(&json(req).await.1["presence"]), [("eve".into(), 1)]);
    // A's sweep hands the expired socket to one node: eve sees dora leave, one offline event.
    let diff = eve_a.expect("presence_diff").await;
    assert_eq!(users(&diff["leaves"]), [("dora".into(), 1)], "{diff}");
    events_settle_to(&hooks, "dora", &["user.online", "user.offline"]).await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_revoked_on_one_node_closes_only_its_sockets_on_the_other() {
    let redis = RedisServer::start();
    let (hook, _hooks) = receiver().await;
    let (a, b) = two_nodes(&redis, &hook, 16).await;
    let revoked = session(&a, "frank", Some(KEY)).await;
    let kept = session(&a, "frank", Some(KEY)).await;
    let mut gone_b = seed(&b, "frank", &revoked).await;
    let mut kept_b = seed(&b, "frank", &kept).await;
    assert_eq!(state(&a, "frank").await["connectedDevices"], 2);
    let (status, _) = json(
        a.delete(&format!("/v1/sessions/{revoked}"))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        gone_b.closed().await,
        (4001, "Logged out from all devices".into())
    );
    eventually("frank has one device left, seen from A", || async {
        state(&a, "frank").await["connectedDevices"] == 1
    })
    .await;
    kept_b.send(json!({"type": "sync_state"})).await;
    assert_eq!(kept_b.expect("state").await["presence"], "online");
}
