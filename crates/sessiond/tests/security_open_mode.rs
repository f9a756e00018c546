//! Open development mode is one server-wide decision (no credential of any kind and a
//! loopback listener), and what it answers: a real server on loopback, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_error, json, TestServer};
use serde_json::json;
use sessiond::config::{Config, EngineKind};
use sessiond_streams::ScopedKeyConfig;

const TENANT: &str = "tenant-key-of-at-least-16-bytes";

fn only_tenant_keys(c: &mut Config) {
    // As in the report: a public listen address (validated, not bound; the harness binds
    // loopback), accepted because a stream key counts as a key.
    c.listen = "0.0.0.0:7700".parse().unwrap();
    c.streams.keys = vec![ScopedKeyConfig {
        key: TENANT.into(),
        stream_prefixes: vec!["tenant-a/".into()],
        read_only: false,
    }];
}

/// With only `[[streams.keys]]` the server is keyed: no anonymous caller (and no tenant key)
/// acts as the service on the realtime APIs or seed C's HTTP endpoints.
#[tokio::test]
async fn tenant_keys_alone_do_not_open_service_apis() {
    let s = TestServer::start(EngineKind::Memory, only_tenant_keys).await;
    let calls: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("stats", s.get("/v1/realtime/stats")),
        (
            "send",
            s.post("/v1/realtime/users/alice/send")
                .json(&json!({"data": {"x": 1}})),
        ),
        (
            "publish",
            s.post("/v1/realtime/publish")
                .json(&json!({"channel": "room:1", "data": {"x": 1}})),
        ),
        (
            "grants",
            s.post("/v1/realtime/grants")
                .json(&json!({"user_id": "alice", "channel": "room:1"})),
        ),
        (
            "revoke grant",
            s.delete("/v1/realtime/grants")
                .json(&json!({"user_id": "alice", "channel": "room:1"})),
        ),
        (
            "grant-tokens",
            s.post("/v1/realtime/grant-tokens")
                .json(&json!({"user_id": "alice", "channel": "room:1"})),
        ),
        ("connections", s.get("/v1/realtime/users/alice/connections")),
        (
            "disconnect user",
            s.delete("/v1/realtime/users/alice/connections"),
        ),
        ("disconnect one", s.delete("/v1/realtime/connections/abc")),
        ("presence", s.get("/v1/realtime/channels/room:1/presence")),
        ("seed state", s.get("/__user-session/state?userId=alice")),
        ("seed clear", s.post("/__user-session/clear?userId=alice")),
        (
            "seed notify",
            s.post("/__user-session/notify?userId=alice")
                .json(&json!({"type": "notification", "message": "hi"})),
        ),
    ];
    for (name, request) in calls {
        let (status, body) = json(request.try_clone().unwrap()).await;
        assert_error(status, &body, 401, &format!("anonymous {name}"));
        let (status, body) = json(request.bearer_auth(TENANT)).await;
        assert!(
            status == 401 || status == 403,
            "tenant key on {name}: {status} {body}"
        );
    }
    // Every other service route set is closed too.
    let (status, body) = json(s.post("/v1/sessions").json(&json!({"userId": "alice"}))).await;
    assert_error(status, &body, 401, "anonymous session create");
    // The tenant key still works on its own streams.
    let res = s
        .put("/v1/stream/tenant-a/x")
        .bearer_auth(TENANT)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

/// A stream preflight from `origin` on server `s`.
async fn preflight(s: &TestServer, origin: &str) -> reqwest::Response {
    s.http
        .request(reqwest::Method::OPTIONS, s.url("/v1/stream/dev/x"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap()
}

/// Open mode answers local pages only: loopback (or allowed) Origins and Host names, no
/// proxy; keyed streams keep their wildcard CORS.
#[tokio::test]
async fn open_mode_answers_only_local_pages() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.http.allowed_hosts = vec!["dev.internal".into()];
        c.http.allowed_origins = vec!["https://app.dev.internal".into()];
    })
    .await;
    // (a) Origins: a foreign page's preflight is refused and carries no wildcard.
    let res = preflight(&s, "https://evil.example").await;
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    for origin in [
        "http://localhost:5173",
        "https://127.0.0.1",
        "http://[::1]:3000",
        "https://app.dev.internal",
    ] {
        let res = preflight(&s, origin).await;
        assert!(res.status().is_success(), "{origin}: {}", res.status());
        assert_eq!(res.headers()["access-control-allow-origin"], origin);
    }
    // A simple (preflight-free) cross-site write is refused too.
    let (status, body) = json(
        s.post("/v1/sessions")
            .header("origin", "https://evil.example")
            .json(&json!({})),
    )
    .await;
    assert_error(status, &body, 403, "foreign origin");
    // (b) Host: a rebinding name is refused; loopback names and allowed hosts are served.
    let (status, body) = json(
        s.post("/v1/sessions")
            .header("host", "rebind.attacker.example")
            .json(&json!({})),
    )
    .await;
    assert_error(status, &body, 403, "rebinding host");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("allowed_hosts"));
    for host in ["localhost:7700", "[::1]", "dev.internal:8080"] {
        let (status, body) =
            json(s.post("/v1/sessions").header("host", host).json(&json!({}))).await;
        assert_eq!(status, 201, "{host}: {body}");
    }
    // A proxy in front means the caller is not local.
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
    ] {
        let (status, body) =
            json(s.post("/v1/sessions").header(name, value).json(&json!({}))).await;
        assert_error(status, &body, 403, name);
        assert!(
            body["error"]["message"].as_str().unwrap().contains("proxy"),
            "{body}"
        );
    }
    s.stop().await;

    // Keyed mode: streams keep `*` (a browser never sends a bearer key on its own), and no
    // Host or proxy rule applies.
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.api_keys = vec!["full-key-0123456789abcdef".into()];
    })
    .await;
    let res = preflight(&s, "https://evil.example").await;
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let (status, _) = json(
        s.post("/v1/sessions")
            .bearer_auth("full-key-0123456789abcdef")
            .header("host", "sessiond.example")
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 201);
}
