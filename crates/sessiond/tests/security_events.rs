//! Security events (issue 19 §6) through a real listener: every lifecycle step of a keyed
//! session lands in the user's stream and, without the user id or address, in the global one;
//! the streams are the server's (read with a full key, never written over HTTP); the
//! new-device signal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{json, TestServer};
use serde_json::{json, Value};
use sessiond::config::{EngineKind, RouteSet};
use sha2::{Digest, Sha256};

const KEY: &str = "security-events-test-key-0123456789";
const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

fn user_stream(user: &str) -> String {
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(user));
    format!("/v1/stream/__security/users/{hash}")
}

/// The stream's messages (empty while it does not exist).
async fn messages(s: &TestServer, path: &str) -> Vec<Value> {
    let res = s
        .get(&format!("{path}?offset=-1"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    if res.status() == 404 {
        return Vec::new();
    }
    assert_eq!(res.status(), 200, "read {path}");
    match res.json::<Value>().await.unwrap() {
        Value::Array(items) => items,
        other => panic!("not a JSON array: {other}"),
    }
}

/// Polls `path` until `done` holds for its messages (a deadline, never a fixed sleep).
async fn wait_for(
    s: &TestServer,
    path: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let items = messages(s, path).await;
        if done(&items) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn types(items: &[Value]) -> Vec<&str> {
    items.iter().filter_map(|e| e["type"].as_str()).collect()
}

async fn create(s: &TestServer, body: Value) -> Value {
    let (status, created) = json(s.post("/v1/sessions").bearer_auth(KEY).json(&body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn server(engine: EngineKind) -> TestServer {
    TestServer::start(engine, |c| {
        c.api_keys = vec![KEY.into()];
        c.open_routes = vec![RouteSet::Sessions];
        c.sessions.max_sessions_per_user = 2;
        c.sessions.sweep_interval_s = 1;
    })
    .await
}

async fn lifecycle_is_recorded(engine: EngineKind) {
    let s = server(engine).await;
    let user = format!("ada-{engine:?}");
    let device = json!({"ip": "203.0.113.7", "user_agent": CHROME_MAC, "label": "work laptop"});
    let first = create(&s, json!({"user_id": user, "device": device})).await;
    assert_eq!(first["new_device"], true, "first sight of the device");
    let id = first["id"].as_str().unwrap().to_string();
    // Same browser family and OS, same /24: known.
    let again = json!({"ip": "203.0.113.99", "user_agent": CHROME_MAC});
    let second = create(&s, json!({"user_id": user, "device": again})).await;
    assert_eq!(second["new_device"], false, "same device");
    // A patch, a rotation, a third create (evicts the oldest under the cap of 2), a delete.
    let (status, _) = json(
        s.patch(&format!("/v1/sessions/{id}"))
            .bearer_auth(KEY)
            .json(&json!({"data": {"role": "admin"}})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, rotated) = json(
        s.post(&format!("/v1/sessions/{id}/rotate"))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 200);
    let rotated_id = rotated["id"].as_str().unwrap().to_string();
    let other_net = json!({"ip": "198.51.100.4", "user_agent": CHROME_MAC});
    let third = create(&s, json!({"user_id": user, "device": other_net})).await;
    assert_eq!(third["new_device"], true, "another network is a new device");
    let third_id = third["id"].as_str().unwrap().to_string();
    let status = s
        .delete(&format!("/v1/sessions/{third_id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let (status, _) = json(
        s.delete(&format!("/v1/users/{user}/sessions"))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 200);

    let want = [
        "session.created",
        "session.created",
        "session.context_changed",
        "session.rotated",
        "session.evicted",
        "session.created",
        "session.revoked",
        "session.revoked",
    ];
    let mine = wait_for(&s, &user_stream(&user), "the user's events", |items| {
        items.len() >= want.len()
    })
    .await;
    assert_eq!(types(&mine), want, "{mine:?}");
    for e in &mine {
        assert_eq!(e["user_id"], user.as_str(), "{e}");
        assert!(e["id"].as_str().is_some_and(|id| id.len() >= 22), "{e}");
        assert!(e["at"].as_i64().is_some(), "{e}");
        assert!(e["session_id"].is_string(), "{e}");
    }
    assert_eq!(
        mine[0]["device"],
        json!({"ip": "203.0.113.0/24", "user_agent": CHROME_MAC})
    );
    assert_eq!(mine[0]["new_device"], true);
    assert_eq!(mine[1]["new_device"], false);
    assert_eq!(mine[2]["changed"], json!(["role"]));
    assert_eq!(mine[3]["session_id"], rotated_id.as_str());
    assert_eq!(mine[3]["previous_session_id"], id.as_str());
    assert_eq!(mine[4]["reason"], "cap");
    assert_eq!(mine[6]["session_id"], third_id.as_str());
    assert_eq!(
        (mine[6]["reason"].as_str(), mine[6]["by"].as_str()),
        (Some("revoked"), Some("service"))
    );
    assert_eq!(mine[7]["reason"], "logout_all");

    // The global stream: the same events by id, no user id, no address.
    let global = wait_for(
        &s,
        "/v1/stream/__security/all",
        "the global events",
        |items| {
            mine.iter()
                .all(|m| items.iter().any(|g| g["id"] == m["id"]))
        },
    )
    .await;
    let refs: Vec<&Value> = global
        .iter()
        .filter(|g| mine.iter().any(|m| m["id"] == g["id"]))
        .map(|g| &g["user_ref"])
        .collect();
    assert!(refs[0].as_str().is_some_and(|r| r.len() == 43), "{refs:?}");
    assert!(
        refs.iter().all(|r| *r == refs[0]),
        "one user, one reference"
    );
    let text = serde_json::to_string(&global).unwrap();
    assert!(!text.contains(&user), "no user id in the global stream");
    assert!(
        !text.contains("203.0.113") && !text.contains("198.51.100"),
        "no address"
    );
    assert!(!text.contains("\"user_id\""), "no user_id field");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_on_sqlite() {
    lifecycle_is_recorded(EngineKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_on_redis() {
    lifecycle_is_recorded(EngineKind::Redis).await;
}

/// Idle and absolute expiry are recorded by the sweep, with their reason (on Redis too: the
/// session hash outlives its deadline until the sweep ends it with its event).
async fn expiry_is_recorded_by_the_sweep(engine: EngineKind) {
    let s = server(engine).await;
    for (user, lifetimes, reason) in [
        ("grace", json!({"idle_ttl_s": 1}), "idle"),
        (
            "grace-abs",
            json!({"idle_ttl_s": 3600, "absolute_ttl_s": 1}),
            "absolute",
        ),
    ] {
        let mut body = lifetimes;
        body["user_id"] = user.into();
        let created = create(&s, body).await;
        let items = wait_for(&s, &user_stream(user), "the expiry", |items| {
            items.len() >= 2
        })
        .await;
        assert_eq!(types(&items), ["session.created", "session.expired"]);
        assert_eq!(items[1]["session_id"], created["id"]);
        assert_eq!(items[1]["reason"], reason);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_expiry_is_recorded_by_the_sweep() {
    expiry_is_recorded_by_the_sweep(EngineKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_recorded_by_the_sweep_on_redis() {
    expiry_is_recorded_by_the_sweep(EngineKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_streams_belong_to_the_server() {
    let s = server(EngineKind::Sqlite).await;
    create(&s, json!({"user_id": "hopper"})).await;
    let path = user_stream("hopper");
    wait_for(&s, &path, "the create", |items| !items.is_empty()).await;
    for target in [path.as_str(), "/v1/stream/__security/all"] {
        let write = s
            .post(target)
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body("[{}]");
        assert_eq!(
            write.send().await.unwrap().status(),
            403,
            "full key cannot write {target}"
        );
        let anonymous = s
            .get(&format!("{target}?offset=-1"))
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            anonymous == 401 || anonymous == 403,
            "{target} anonymous read: {anonymous}"
        );
        let delete = s
            .delete(target)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(delete, 403, "full key cannot delete {target}");
    }
    // An open-route session (no credential on an open route) proves no identity: no user
    // stream, no new-device signal; the global stream still records it.
    let (status, open) = json(s.post("/v1/sessions").json(
        &json!({"user_id": "mallory", "device": {"ip": "192.0.2.1", "user_agent": CHROME_MAC}}),
    ))
    .await;
    assert_eq!(status, 201);
    assert!(open.get("new_device").is_none(), "{open}");
    wait_for(
        &s,
        "/v1/stream/__security/all",
        "the open-route create",
        |items| {
            items
                .iter()
                .any(|g| g["session_id"] == open["id"] && g["origin"] == "open_route")
        },
    )
    .await;
    assert!(messages(&s, &user_stream("mallory")).await.is_empty());
    s.stop().await;
}

/// Sockets and grants: a socket closed by an ending, a refused socket (global only, counted),
/// a grant issued and revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_and_grants_are_recorded() {
    let s = server(EngineKind::Sqlite).await;
    let token = realtime_support::session(&s, "turing", Some(KEY)).await;
    let mut ws = realtime_support::connect(&s, &format!("/v1/realtime?token={token}"), &[])
        .await
        .open();
    ws.expect("connected").await;
    let status = s
        .delete(&format!("/v1/sessions/{token}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    ws.closed().await;
    let (status, _) = realtime_support::connect(&s, "/v1/realtime?token=not-a-session", &[])
        .await
        .refused();
    assert_eq!(status, 401);
    for (method, status) in [("POST", 201), ("DELETE", 204)] {
        let req = match method {
            "POST" => s
                .post("/v1/realtime/grants")
                .json(&json!({"user_id": "turing", "channel": "room:lab", "publish": true})),
            _ => s.delete("/v1/realtime/grants?user_id=turing&channel=room:lab"),
        };
        assert_eq!(req.bearer_auth(KEY).send().await.unwrap().status(), status);
    }
    let mine = wait_for(
        &s,
        &user_stream("turing"),
        "the socket and grant events",
        |items| {
            ["socket.closed", "grant.issued", "grant.revoked"]
                .iter()
                .all(|k| types(items).contains(k))
        },
    )
    .await;
    let closed = mine.iter().find(|e| e["type"] == "socket.closed").unwrap();
    assert_eq!(closed["session_id"], token.as_str());
    assert_eq!(
        (closed["reason"].as_str(), closed["protocol"].as_str()),
        (Some("revoked"), Some("v1"))
    );
    let issued = mine.iter().find(|e| e["type"] == "grant.issued").unwrap();
    assert_eq!(issued["channel"], "room:lab");
    let global = wait_for(&s, "/v1/stream/__security/all", "the refusal", |items| {
        items.iter().any(|e| e["type"] == "socket.refused")
    })
    .await;
    let refusal = global
        .iter()
        .find(|e| e["type"] == "socket.refused")
        .unwrap();
    assert_eq!(refusal["status"], 401);
    assert!(
        refusal["user_ref"].is_null() && refusal["session_id"].is_null(),
        "{refusal}"
    );
    assert!(common::counter(&s, "sessiond_security_refused_total{what=\"socket\"}").await >= 1.0);
    // A refused request is counted too.
    let refused = s
        .post("/v1/sessions/x/rotate")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(refused, 401);
    assert!(common::counter(&s, "sessiond_security_refused_total{what=\"request\"}").await >= 1.0);
    s.stop().await;
}

/// Refusals beyond `max_refused_events_per_minute` are counted, not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_socket_events_are_rate_limited() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![KEY.into()];
        c.security.max_refused_events_per_minute = 2;
    })
    .await;
    for _ in 0..5 {
        let (status, _) = realtime_support::connect(&s, "/v1/realtime?token=nope", &[])
            .await
            .refused();
        assert_eq!(status, 401);
    }
    assert!(common::counter(&s, "sessiond_security_refused_total{what=\"socket\"}").await >= 5.0);
    common::wait_for_counter(
        &s,
        "sessiond_security_refused_events_dropped_total",
        3.0,
        Duration::from_secs(10),
    )
    .await;
    let refusals = wait_for(&s, "/v1/stream/__security/all", "two refusals", |items| {
        items
            .iter()
            .filter(|e| e["type"] == "socket.refused")
            .count()
            >= 2
    })
    .await;
    assert_eq!(
        refusals
            .iter()
            .filter(|e| e["type"] == "socket.refused")
            .count(),
        2
    );
    s.stop().await;
}
