//! One behaviour for bad input, through a listening server: unknown JSON fields, a publish
//! without `data`, 405 with a JSON body and `Allow`, strong `If-Match`, an empty `except`,
//! an `Authorization` header without `Bearer`, and the 409 of a JSON append to an
//! octet-stream stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, json, TestServer};
use serde_json::{json, Value};
use sessiond::config::EngineKind;

const KEY: &str = "a-full-access-key-0123456789";

async fn memory() -> TestServer {
    TestServer::start(EngineKind::Memory, |_| {}).await
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn create_session(server: &TestServer, user: &str) -> String {
    let (status, body) = json(
        server
            .post("/v1/sessions")
            .json(&json!({"user_id": user, "data": {}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn unknown_json_fields_are_refused_on_every_v1_body() {
    let server = memory().await;
    let cases = [
        (
            "/v1/middleware/decide",
            json!({"ip": "192.0.2.1", "ipaddr": "192.0.2.1"}),
            "ipaddr",
        ),
        (
            "/v1/realtime/publish",
            json!({"channel": "room:a", "data": 1, "chanel": "x"}),
            "chanel",
        ),
        (
            "/v1/realtime/grants",
            json!({"user_id": "bob", "channel": "room:a", "ttl": 5}),
            "ttl",
        ),
        (
            "/v1/realtime/grant-tokens",
            json!({"user_id": "bob", "channel": "room:a", "write": true}),
            "write",
        ),
        (
            "/v1/realtime/users/bob/send",
            json!({"data": 1, "to": "bob"}),
            "to",
        ),
        (
            "/v1/sessions",
            json!({"user_id": "bob", "data": {}, "ttl": 5}),
            "ttl",
        ),
    ];
    for (path, body, field) in cases {
        let (status, reply) = json(server.post(path).json(&body)).await;
        assert_error(status, &reply, 400, path);
        assert!(message(&reply).contains(field), "{path}: {reply}");
    }
    let sub = json!({"type": "pull-wake", "pattern": "x/*", "wake_stream": "w", "labels": {}});
    let (status, reply) = json(server.put("/v1/stream/__ds/subscriptions/s1").json(&sub)).await;
    assert_error(status, &reply, 400, "subscription PUT");
    assert!(message(&reply).contains("labels"), "{reply}");

    // The seeds' wire-compatible routes keep taking what their clients send: their bodies
    // are free-form session data.
    let res = server
        .post("/compat/session-state/create")
        .json(&json!({"username": "ada", "anything": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn publish_needs_data_but_data_may_be_null() {
    let server = memory().await;
    let (status, reply) = json(
        server
            .post("/v1/realtime/publish")
            .json(&json!({"channel": "room:a"})),
    )
    .await;
    assert_error(status, &reply, 400, "publish without data");
    assert!(message(&reply).contains("data"), "{reply}");
    let (status, reply) = json(server.post("/v1/realtime/users/bob/send").json(&json!({}))).await;
    assert_error(status, &reply, 400, "send without data");
    let (status, reply) = json(
        server
            .post("/v1/realtime/publish")
            .json(&json!({"channel": "room:a", "data": null})),
    )
    .await;
    assert_eq!(status, 200, "an explicit null is a message: {reply}");
}

#[tokio::test]
async fn wrong_method_is_a_json_405_with_allow_on_every_router() {
    let server = memory().await;
    let http = &server.http;
    let cases = [
        (reqwest::Method::PUT, "/v1/sessions", "POST"),
        (reqwest::Method::POST, "/v1/users/alice/sessions", "DELETE"),
        (reqwest::Method::PUT, "/v1/cache/ns", "DELETE"),
        (reqwest::Method::GET, "/v1/middleware/decide", "POST"),
        (reqwest::Method::GET, "/v1/realtime/publish", "POST"),
        (reqwest::Method::POST, "/healthz", "GET"),
        (reqwest::Method::PATCH, "/v1/stream/a/b", "PUT"),
    ];
    for (method, path, allowed) in cases {
        let res = http
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        let allow = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_error(status, &body, 405, &format!("{method} {path}"));
        assert_eq!(body["error"]["code"], "method_not_allowed", "{path}");
        assert!(allow.contains(allowed), "{method} {path}: Allow `{allow}`");
    }
}

#[tokio::test]
async fn if_match_uses_the_strong_comparison() {
    let server = memory().await;
    let id = create_session(&server, "alice").await;
    let path = format!("/v1/sessions/{id}");
    let patch = |tag: &str| {
        server
            .patch(&path)
            .header("if-match", tag)
            .json(&json!({"data": {"x": 1}}))
    };
    for weak in [
        r#"W/"1""#,
        r#"W/"1", W/"2""#,
        r#""v1""#,
        r#""01""#,
        r#""+1""#,
    ] {
        let (status, body) = json(patch(weak)).await;
        assert_error(status, &body, 412, weak);
    }
    for malformed in ["abc", "1", r#""1"#, r#"W/1"#, r#""1", abc"#] {
        let (status, body) = json(patch(malformed)).await;
        assert_error(status, &body, 400, malformed);
        assert!(message(&body).contains("If-Match"), "{body}");
    }
    // Nothing above changed the session; the strong tag it has still matches.
    let (status, body) = json(patch(r#""1""#)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = json(patch(r#"W/"2", "2""#)).await;
    assert_eq!(status, 200, "a list matches through its strong tag: {body}");
    let (status, body) = json(patch("*")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_empty_except_revokes_nothing() {
    let server = memory().await;
    let keep = create_session(&server, "alice").await;
    let other = create_session(&server, "alice").await;
    for query in ["?except=", "?except=%20"] {
        let (status, body) = json(server.delete(&format!("/v1/users/alice/sessions{query}"))).await;
        assert_error(status, &body, 400, query);
        assert!(message(&body).contains("except"), "{body}");
    }
    for id in [&keep, &other] {
        let res = server
            .get(&format!("/v1/sessions/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "session {id} survived");
    }
    let (status, body) =
        json(server.delete(&format!("/v1/users/alice/sessions?except={keep}"))).await;
    assert_eq!((status, body["revoked"].clone()), (200, json!(1)), "{body}");
}

#[tokio::test]
async fn a_key_without_bearer_gets_the_hint() {
    let server = TestServer::start(EngineKind::Memory, |c| c.api_keys = vec![KEY.into()]).await;
    let paths = [
        (reqwest::Method::GET, "/v1/users/alice/sessions"),
        (reqwest::Method::GET, "/v1/stream/a/b"),
        (reqwest::Method::GET, "/v1/realtime/stats"),
    ];
    for (method, path) in paths {
        for header in [KEY.to_owned(), format!("Basic {KEY}")] {
            let req = server
                .http
                .request(method.clone(), server.url(path))
                .header("authorization", &header);
            let (status, body) = json(req).await;
            assert_error(status, &body, 401, path);
            assert!(
                message(&body).contains("Authorization: Bearer <key>"),
                "{path}: {body}"
            );
        }
        let req = server.http.request(method.clone(), server.url(path));
        let (status, body) = json(req).await;
        assert_error(status, &body, 401, path);
        assert!(message(&body).starts_with("missing"), "{path}: {body}");
        let req = server
            .http
            .request(method, server.url(path))
            .bearer_auth(KEY);
        let res = req.send().await.unwrap();
        assert_ne!(res.status(), 401, "{path} with the bearer key");
    }
}

#[tokio::test]
async fn a_json_append_to_an_octet_stream_explains_the_default() {
    let server = memory().await;
    let res = server.put("/v1/stream/raw/one").send().await.unwrap();
    assert_eq!(res.status(), 201);
    let (status, body) = json(
        server
            .post("/v1/stream/raw/one")
            .header("content-type", "application/json")
            .body(r#"{"a":1}"#),
    )
    .await;
    assert_error(status, &body, 409, "JSON append");
    let text = message(&body);
    assert!(
        text.contains("created without Content-Type is application/octet-stream"),
        "{body}"
    );
    // A stream that was given a type names it, without the octet-stream note.
    let res = server
        .put("/v1/stream/raw/two")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (status, body) = json(
        server
            .post("/v1/stream/raw/two")
            .header("content-type", "application/json")
            .body("1"),
    )
    .await;
    assert_error(status, &body, 409, "JSON append to text");
    assert!(message(&body).contains("`text/plain`"), "{body}");
    assert!(!message(&body).contains("octet-stream"), "{body}");
}
