//! `POST /v1/sessions/{id}/rotate`: the session continues under a new id (same user, data,
//! device, creation time, absolute deadline; version continues), the old id answers 404 on
//! every route at once, and only a full service key may rotate, whatever `open_routes` says.
//! `POST /v1/sessions/{id}/touch` extends the idle deadline (204), under the same key rule.
//! Real server, every engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, engines, json, TestServer};
use serde_json::json;
use sessiond::config::RouteSet;

const KEY: &str = "service-key-for-the-rotation-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_moves_the_session_to_a_new_id_and_kills_the_old_one() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let ctx = format!("{engine:?}");
        let (status, old) = json(s.post("/v1/sessions").json(&json!({
            "user_id": "alice",
            "data": {"cart": [1], "role": "guest"},
            "device": {"ip": "192.0.2.1", "user_agent": "test"},
        })))
        .await;
        assert_eq!(status, 201, "{ctx}: {old}");
        let old_id = old["id"].as_str().unwrap().to_string();

        let res = s
            .post(&format!("/v1/sessions/{old_id}/rotate"))
            .json(&json!({"data": {"role": "member", "cart": null}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{ctx}");
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        let new: serde_json::Value = res.json().await.unwrap();
        let new_id = new["id"].as_str().unwrap().to_string();
        assert_ne!(new_id, old_id, "{ctx}");
        assert!(new_id.len() >= 24, "{ctx}: a CSPRNG id, {new_id}");
        assert_eq!(
            new["data"],
            json!({"role": "member"}),
            "{ctx}: patch applied"
        );
        for same in [
            "user_id",
            "device",
            "created_at",
            "absolute_expires_at",
            "origin",
        ] {
            assert_eq!(new[same], old[same], "{ctx}: {same} continues");
        }
        assert_eq!(new["version"], 2, "{ctx}: the version continues");
        assert_eq!(etag, "\"2\"", "{ctx}");

        // The old id is dead on every route; the new one is the session.
        let old_path = format!("/v1/sessions/{old_id}");
        for req in [
            s.get(&old_path),
            s.patch(&old_path).json(&json!({"data": {"x": 1}})),
            s.put(&old_path).json(&json!({"data": {}})),
            s.delete(&old_path),
            s.post(&format!("{old_path}/rotate")),
        ] {
            let (status, body) = json(req).await;
            assert_error(status, &body, 404, &format!("{ctx}: old id"));
        }
        let (status, got) = json(s.get(&format!("/v1/sessions/{new_id}"))).await;
        assert_eq!(
            (status, &got["data"]),
            (200, &json!({"role": "member"})),
            "{ctx}"
        );
        let (_, listed) = json(s.get("/v1/users/alice/sessions")).await;
        let ids: Vec<&str> = listed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![new_id.as_str()], "{ctx}: the user's list follows");

        // Without a body, the data stays; `If-Match` is honoured; bad bodies are a 400.
        let path = format!("/v1/sessions/{new_id}/rotate");
        let (status, body) = json(s.post(&path).header("if-match", "\"1\"")).await;
        assert_error(status, &body, 412, &format!("{ctx}: stale If-Match"));
        let (status, body) = json(s.post(&path).json(&json!({"user_id": "mallory"}))).await;
        assert_error(status, &body, 400, &format!("{ctx}: only data"));
        let (status, body) = json(s.post(&path).json(&json!({"data": [1]}))).await;
        assert_error(status, &body, 400, &format!("{ctx}: data not an object"));
        let (status, third) = json(s.post(&path).header("if-match", "\"2\"")).await;
        assert_eq!(status, 200, "{ctx}: {third}");
        assert_eq!(third["data"], json!({"role": "member"}), "{ctx}");
        assert_eq!(third["version"], 3, "{ctx}");
        assert_eq!(
            third["updated_at"], got["updated_at"],
            "{ctx}: data unchanged"
        );
        let (status, _) = json(s.get(&format!("/v1/sessions/{new_id}"))).await;
        assert_eq!(status, 404, "{ctx}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_needs_a_service_key_even_on_open_routes_and_keeps_the_origin() {
    let s = TestServer::start(sessiond::config::EngineKind::Sqlite, |c| {
        c.api_keys = vec![KEY.into()];
        c.open_routes = vec![RouteSet::Sessions];
    })
    .await;
    let (status, open) = json(s.post("/v1/sessions").json(&json!({"user_id": "alice"}))).await;
    assert_eq!(status, 201, "{open}");
    assert_eq!(open["origin"], "open_route");
    let id = open["id"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}/rotate");
    let (status, body) = json(s.post(&path)).await;
    assert_error(status, &body, 401, "rotate without a key on an open route");
    let (status, body) = json(s.post(&format!("/v1/sessions/{id}/touch"))).await;
    assert_error(status, &body, 401, "touch without a key on an open route");
    let (status, body) = json(s.post(&path).bearer_auth("not-the-key")).await;
    assert_error(status, &body, 401, "rotate with a wrong key");
    let (status, rotated) = json(s.post(&path).bearer_auth(KEY)).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(
        rotated["origin"], "open_route",
        "the origin survives rotation"
    );
    assert_eq!(rotated["user_id"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_extends_the_idle_deadline_and_keeps_the_version() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let ctx = format!("{engine:?}");
        let (_, created) = json(s.post("/v1/sessions").json(&json!({
            "user_id": "alice", "idle_ttl_s": 3600, "absolute_ttl_s": 7200,
        })))
        .await;
        let id = created["id"].as_str().unwrap();
        let before = created["idle_expires_at"].as_i64().unwrap();
        // Let the clock move past the creation millisecond.
        while sessiond_store::now_ms() <= created["created_at"].as_i64().unwrap() + 2 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let res = s
            .post(&format!("/v1/sessions/{id}/touch"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{ctx}");
        let (_, got) = json(s.get(&format!("/v1/sessions/{id}"))).await;
        assert!(
            got["idle_expires_at"].as_i64().unwrap() > before,
            "{ctx}: {before} -> {got}"
        );
        assert_eq!(got["version"], 1, "{ctx}: a touch is not a change");
        let (status, body) = json(s.post("/v1/sessions/no-such-session/touch")).await;
        assert_error(status, &body, 404, &format!("{ctx}: unknown id"));
    }
}
