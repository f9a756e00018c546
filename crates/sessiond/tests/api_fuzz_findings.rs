//! Regression tests of the server bugs the schemathesis run (`scripts/fuzz-api/run`) found, one
//! per finding; the findings that were mismatches of the OpenAPI document, not of the server,
//! are listed in docs/api.md#openapi.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, json, TestServer};
use serde_json::json;
use sessiond::config::EngineKind;

const KEY: &str = "fuzz-findings-key-0123456789";

async fn keyed() -> TestServer {
    TestServer::start(EngineKind::Memory, |c| c.api_keys = vec![KEY.into()]).await
}

/// `DELETE /v1/realtime/grants` without one of its query fields answered axum's plain-text
/// rejection; every API answers the JSON error shape.
#[tokio::test]
async fn a_grant_revoke_without_its_query_fields_is_a_json_400() {
    let s = keyed().await;
    for path in [
        "/v1/realtime/grants?user_id=alice",
        "/v1/realtime/grants?channel=room:x",
        "/v1/realtime/grants",
    ] {
        let res = s.delete(path).bearer_auth(KEY).send().await.unwrap();
        assert_eq!(res.status(), 400, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}: {:?}",
            res.headers()["content-type"]
        );
        let body: serde_json::Value = res.json().await.unwrap();
        assert_error(400, &body, 400, path);
    }
    // Still a credential check first: no key is a 401, whatever the query.
    let res = s.delete("/v1/realtime/grants").send().await.unwrap();
    assert_eq!(res.status(), 401);
    s.stop().await;
}

/// A malformed `Sessiond-Durability` with an `If-Match` that does not match answered 412: a
/// request that is bad without its preconditions is a 400 (RFC 9110 §13.2.1), and nothing is
/// written.
#[tokio::test]
async fn a_bad_durability_header_is_a_400_before_if_match_is_weighed() {
    let s = keyed().await;
    let (status, body) = json(
        s.post("/v1/sessions")
            .bearer_auth(KEY)
            .json(&json!({"user_id": "alice"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let path = format!("/v1/sessions/{}", body["id"].as_str().unwrap());
    let bad = |req: reqwest::RequestBuilder| {
        req.bearer_auth(KEY)
            .header("if-match", "\"7\"")
            .header("sessiond-durability", "sometimes")
    };
    let cases = [
        ("PUT", bad(s.put(&path)).json(&json!({"data": {"x": 1}}))),
        (
            "PATCH",
            bad(s.patch(&path)).json(&json!({"data": {"x": 1}})),
        ),
        ("DELETE", bad(s.delete(&path))),
        ("ROTATE", bad(s.post(&format!("{path}/rotate")))),
    ];
    for (what, req) in cases {
        let (status, body) = json(req).await;
        assert_error(status, &body, 400, what);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("sessiond-durability"),
            "{what}: {body}"
        );
    }
    // The session is untouched: version 1, same id.
    let (status, body) = json(s.get(&path).bearer_auth(KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["data"], json!({}));
    s.stop().await;
}

/// serde reads a struct from a JSON array too (its fields in order): `PUT /v1/cache/n/k` with
/// `[null, null]` stored `null` with no TTL. Every JSON API body must be an object, and nothing
/// is written for an array.
#[tokio::test]
async fn an_array_body_is_a_400_on_every_json_api() {
    let s = keyed().await;
    let (status, body) = json(s.post("/v1/sessions").bearer_auth(KEY).json(&json!({}))).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let sub = "/v1/stream/__ds/subscriptions/s1";
    let cases: Vec<(&str, String, serde_json::Value)> = vec![
        ("PUT", "/v1/cache/n/k".into(), json!([null, null])),
        ("POST", "/v1/sessions".into(), json!(["alice", {}])),
        ("PUT", format!("/v1/sessions/{id}"), json!([{"x": 1}])),
        ("PATCH", format!("/v1/sessions/{id}"), json!([{"x": 1}])),
        ("POST", "/v1/realtime/publish".into(), json!(["room:x", 1])),
        (
            "POST",
            "/v1/realtime/grants".into(),
            json!(["bob", "room:x"]),
        ),
        (
            "POST",
            "/v1/realtime/grant-tokens".into(),
            json!(["bob", "room:x"]),
        ),
        ("POST", "/v1/realtime/users/bob/send".into(), json!([1])),
        ("POST", "/v1/middleware/decide".into(), json!(["192.0.2.1"])),
        ("PUT", sub.into(), json!(["pull-wake", "a/*"])),
        ("POST", format!("{sub}/claim"), json!(["worker"])),
    ];
    for (method, path, payload) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = reqwest::Client::new()
            .request(method.clone(), s.url(&path))
            .bearer_auth(KEY)
            .json(&payload);
        let (status, body) = json(req).await;
        assert_error(status, &body, 400, &format!("{method} {path}"));
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("object"),
            "{method} {path}: {body}"
        );
    }
    // Nothing was written.
    let (status, _) = json(s.get("/v1/cache/n/k").bearer_auth(KEY)).await;
    assert_eq!(status, 404);
    let (status, body) = json(s.get(&format!("/v1/sessions/{id}")).bearer_auth(KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], 1, "{body}");
    let (status, _) = json(s.get(sub).bearer_auth(KEY)).await;
    assert_eq!(status, 404);
    s.stop().await;
}
