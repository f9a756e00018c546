//! A user's devices, export and erasure (`/v1/users/{u}/devices`, `/export`, `DELETE
//! /v1/users/{u}?confirm={u}`) through a real listener with real WebSocket clients: devices
//! group the user's sockets under their sessions (service-key sockets under `session: null`,
//! open-route sessions absent), newest activity first; the export holds every capability's
//! part; erasure closes every socket and SSE reader with `erased` (seed C's sockets with its
//! logout close) and removes sessions and realtime state;
//! on two nodes sharing Redis the view and the erasure span both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{json, TestServer};
use realtime_support::sse::open;
use realtime_support::{connect, eventually, Ws};
use serde_json::{json, Value};
use sessiond::config::{EngineKind, RouteSet};
use sessiond_engine_redis::testing::RedisServer;

const KEY: &str = "users-test-service-key-0123456789";

/// A session of `user` created with the service key (or without: an open-route session).
async fn session(s: &TestServer, user: &str, keyed: bool, device: &str) -> String {
    let mut req = s
        .post("/v1/sessions")
        .json(&json!({"user_id": user, "device": {"name": device}}));
    if keyed {
        req = req.bearer_auth(KEY);
    }
    let (status, body) = json(req).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// A v1 socket of the session `token` with a user agent, `connected` read.
async fn v1(s: &TestServer, token: &str, device: &str, agent: &str) -> Ws {
    let path = format!("/v1/realtime?token={token}&deviceId={device}");
    let mut ws = connect(s, &path, &[("user-agent", agent)]).await.open();
    ws.expect("connected").await;
    ws
}

/// A v1 socket opened with the service key, acting as `user`.
async fn service_socket(s: &TestServer, user: &str) -> Ws {
    let auth = format!("Bearer {KEY}");
    let path = format!("/v1/realtime?userId={user}&deviceId=backend");
    let mut ws = connect(s, &path, &[("authorization", &auth)]).await.open();
    ws.expect("connected").await;
    ws
}

async fn devices(s: &TestServer, user: &str) -> Vec<Value> {
    let (status, body) = json(s.get(&format!("/v1/users/{user}/devices")).bearer_auth(KEY)).await;
    assert_eq!(status, 200, "{body}");
    body["devices"].as_array().unwrap().clone()
}

fn session_ids(devices: &[Value]) -> Vec<Value> {
    devices.iter().map(|d| d["session"]["id"].clone()).collect()
}

fn keyed(c: &mut sessiond::Config) {
    c.api_keys = vec![KEY.into()];
    c.open_routes = vec![RouteSet::Sessions];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_list_sessions_with_their_sockets_newest_first() {
    let s = TestServer::start(EngineKind::Sqlite, keyed).await;
    let phone = session(&s, "alice", true, "phone").await;
    let laptop = session(&s, "alice", true, "laptop").await;
    let open = session(&s, "alice", false, "kiosk").await;
    let _other = session(&s, "bob", true, "bob-phone").await;

    // Every route needs the full key, even with the sessions routes open.
    for path in ["/v1/users/alice/devices", "/v1/users/alice/export"] {
        let (status, _) = json(s.get(path)).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, _) = json(s.delete("/v1/users/alice?confirm=alice")).await;
    assert_eq!(status, 401);

    let mut on_phone = v1(&s, &phone, "phone-1", "PhoneBrowser/1.0").await;
    let _on_laptop = v1(&s, &laptop, "laptop-1", "LaptopBrowser/2.0").await;
    let _backend = service_socket(&s, "alice").await;

    let list = devices(&s, "alice").await;
    assert_eq!(
        list.len(),
        3,
        "two keyed sessions and the service socket: {list:#?}"
    );
    let ids = session_ids(&list);
    assert!(ids.contains(&json!(phone)) && ids.contains(&json!(laptop)));
    assert!(
        !ids.contains(&json!(open)),
        "an open-route session is no device"
    );
    let phone_dev = list.iter().find(|d| d["session"]["id"] == phone).unwrap();
    assert_eq!(phone_dev["session"]["device"]["name"], "phone");
    assert_eq!(phone_dev["session"]["origin"], "service");
    let conns = phone_dev["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let c = &conns[0];
    assert_eq!(c["session_id"], phone);
    assert_eq!(c["device_id"], "phone-1");
    assert_eq!(c["protocol"], "v1");
    assert_eq!(c["user_agent"], "PhoneBrowser/1.0");
    assert_eq!(c["ip"], "127.0.0.1");
    assert_eq!(c["presence"], "online");
    assert!(c["id"].is_string() && c["connected_at"].is_i64(), "{c}");
    assert!(
        c["last_frame_at"].is_null(),
        "no application frame yet: {c}"
    );
    let null_dev = list.iter().find(|d| d["session"].is_null()).unwrap();
    let backend = &null_dev["connections"][0];
    assert_eq!(
        (&backend["device_id"], &backend["session_id"]),
        (&json!("backend"), &Value::Null)
    );
    // The connection objects are those of the connections API.
    let (_, api) = json(
        s.get("/v1/realtime/users/alice/connections")
            .bearer_auth(KEY),
    )
    .await;
    let api_ids: Vec<&Value> = api["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert!(api_ids.contains(&&c["id"]), "{api}");

    // An application frame on the phone makes it the most recently active device.
    on_phone
        .send(json!({"type": "subscribe", "channel": "user:alice"}))
        .await;
    on_phone.expect("subscribed").await;
    let list = devices(&s, "alice").await;
    assert_eq!(list[0]["session"]["id"], phone, "{list:#?}");
    assert!(list[0]["connections"][0]["last_frame_at"].is_i64());

    // A device ends with the session's own DELETE (its socket closes as `revoked`).
    let (status, _) = json(s.delete(&format!("/v1/sessions/{laptop}")).bearer_auth(KEY)).await;
    assert_eq!(status, 204);
    eventually("the laptop leaves the devices", || async {
        !session_ids(&devices(&s, "alice").await).contains(&json!(laptop))
    })
    .await;
    assert!(devices(&s, "nobody").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_holds_every_part_and_erasure_removes_them() {
    let s = TestServer::start(EngineKind::Sqlite, keyed).await;
    let phone = session(&s, "erin", true, "phone").await;
    let _open = session(&s, "erin", false, "kiosk").await;
    let keep = session(&s, "frank", true, "phone").await;
    let (status, body) = json(
        s.post("/v1/realtime/grants")
            .bearer_auth(KEY)
            .json(&json!({"user_id": "erin", "channel": "room:ops", "publish": true})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut on_phone = v1(&s, &phone, "phone-1", "PhoneBrowser/1.0").await;
    let mut backend = service_socket(&s, "erin").await;
    let mut franks = v1(&s, &keep, "frank-1", "F/1").await;
    let mut seed = connect(&s, &format!("/__user-session?token={phone}"), &[])
        .await
        .open();
    seed.expect("initial_state").await;
    let mut sse = open(&s, &format!("channels=user:erin&token={phone}"), None)
        .await
        .unwrap();
    sse.expect("subscribed").await;

    let (status, doc) = json(s.get("/v1/users/erin/export").bearer_auth(KEY)).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["user_id"], "erin");
    let sessions = doc["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "keyed and open-route sessions: {doc:#}");
    assert!(sessions
        .iter()
        .any(|r| r["id"] == phone && r["data"].is_object()));
    assert_eq!(doc["realtime"]["state"]["presence"], "online", "{doc:#}");
    assert_eq!(
        doc["realtime"]["state"]["grants"]["room:ops"]["publish"],
        true
    );
    assert_eq!(
        doc["realtime"]["connections"].as_array().unwrap().len(),
        4,
        "v1, service-key, seed and SSE connections"
    );

    // Without a matching confirmation nothing happens.
    for query in ["", "?confirm=", "?confirm=frank", "?confirm=erin2"] {
        let (status, body) =
            json(s.delete(&format!("/v1/users/erin{query}")).bearer_auth(KEY)).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, _) = json(s.get(&format!("/v1/sessions/{phone}")).bearer_auth(KEY)).await;
    assert_eq!(status, 200, "still there after refused erasures");

    let (status, _) = json(s.delete("/v1/users/erin?confirm=erin").bearer_auth(KEY)).await;
    assert_eq!(status, 204);
    for ws in [&mut on_phone, &mut backend] {
        assert_eq!(ws.expect("session_ended").await["reason"], "erased");
        assert_eq!(ws.closed().await, (4001, "User erased".to_string()));
    }
    assert_eq!(
        seed.closed().await,
        (4001, "Logged out from all devices".to_string()),
        "seed C's sockets keep the reason its hook compares"
    );
    assert_eq!(sse.until("session_ended").await.data["reason"], "erased");
    let logout = sse.expect("logout").await;
    assert_eq!(
        (&logout.data["code"], &logout.data["reason"]),
        (&json!(4001), &json!("User erased"))
    );
    assert!(sse.next().await.is_none(), "the SSE stream ends");
    let (status, _) = json(s.get(&format!("/v1/sessions/{phone}")).bearer_auth(KEY)).await;
    assert_eq!(status, 404);
    let (_, doc) = json(s.get("/v1/users/erin/export").bearer_auth(KEY)).await;
    assert_eq!(doc["sessions"], json!([]), "{doc:#}");
    assert!(doc["realtime"]["state"].is_null(), "{doc:#}");
    eventually("erin's sockets are gone", || async {
        let (_, doc) = json(s.get("/v1/users/erin/export").bearer_auth(KEY)).await;
        doc["realtime"]["connections"] == json!([])
    })
    .await;
    // A reconnect with the erased session is refused; other users are untouched.
    let (status, _) = connect(&s, &format!("/v1/realtime?token={phone}"), &[])
        .await
        .refused();
    assert_eq!(status, 401);
    franks.send(json!({"type": "ping", "id": 1})).await;
    franks.expect("pong").await;
    let (status, _) = json(s.get(&format!("/v1/sessions/{keep}")).bearer_auth(KEY)).await;
    assert_eq!(status, 200);
    // Erasing again (or an unknown user) succeeds.
    let (status, _) = json(s.delete("/v1/users/erin?confirm=erin").bearer_auth(KEY)).await;
    assert_eq!(status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_erasure_span_two_nodes_on_redis() {
    let redis = RedisServer::start();
    let a = TestServer::start_node(&redis, keyed).await;
    let b = TestServer::start_node(&redis, keyed).await;
    let phone = session(&a, "gina", true, "phone").await;
    let laptop = session(&b, "gina", true, "laptop").await;
    let mut on_b = v1(&b, &phone, "phone-1", "PhoneBrowser/1.0").await;
    let mut on_a = v1(&a, &laptop, "laptop-1", "LaptopBrowser/2.0").await;
    let mut backend_b = service_socket(&b, "gina").await;

    // Either node lists the sockets of both.
    for node in [&a, &b] {
        let list = devices(node, "gina").await;
        assert_eq!(list.len(), 3, "{list:#?}");
        let phone_dev = list.iter().find(|d| d["session"]["id"] == phone).unwrap();
        let c = &phone_dev["connections"][0];
        assert_eq!(
            (&c["device_id"], &c["user_agent"], &c["presence"]),
            (
                &json!("phone-1"),
                &json!("PhoneBrowser/1.0"),
                &json!("online")
            )
        );
        assert!(list.iter().any(|d| d["session"].is_null()));
    }

    // Erasure on A closes the sockets on B and on A, and both nodes see nothing left.
    let (status, _) = json(a.delete("/v1/users/gina?confirm=gina").bearer_auth(KEY)).await;
    assert_eq!(status, 204);
    for ws in [&mut on_b, &mut on_a, &mut backend_b] {
        assert_eq!(ws.expect("session_ended").await["reason"], "erased");
        assert_eq!(ws.closed().await, (4001, "User erased".to_string()));
    }
    for node in [&a, &b] {
        let (status, _) = json(node.get(&format!("/v1/sessions/{phone}")).bearer_auth(KEY)).await;
        assert_eq!(status, 404);
        eventually("no device left", || async {
            devices(node, "gina").await.is_empty()
        })
        .await;
        let (_, doc) = json(node.get("/v1/users/gina/export").bearer_auth(KEY)).await;
        assert_eq!(doc["sessions"], json!([]));
        assert!(doc["realtime"]["state"].is_null(), "{doc:#}");
    }
}
