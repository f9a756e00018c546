//! What a request must look like before any work is done for it: JSON APIs take only JSON
//! media types, and stream scope is decided from the headers before the body is read. Real
//! server on loopback, real HTTP (and raw TCP where a client library would not misbehave).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{assert_error, json, TestServer};
use sessiond::config::{Config, EngineKind};
use sessiond_streams::ScopedKeyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FULL: &str = "full-key-0123456789abcdef";
const TENANT: &str = "tenant-a-key-0123456789";

fn keyed(c: &mut Config) {
    c.api_keys = vec![FULL.into()];
    c.streams.keys = vec![ScopedKeyConfig {
        key: TENANT.into(),
        stream_prefixes: vec!["tenant-a".into()],
        read_only: false,
    }];
}

/// `text/plain` and form bodies never reach a JSON handler (a cross-site form or a
/// preflight-free `fetch` would otherwise act); seed surfaces accept an unlabelled or
/// `text/plain` body only with `Authorization`, which no page can add without a preflight.
#[tokio::test]
async fn json_apis_take_only_json_media_types() {
    let s = TestServer::start(EngineKind::Memory, |_| {}).await;
    let body = r#"{"user_id":"alice"}"#;
    for content_type in [
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for path in [
            "/v1/sessions",
            "/v1/realtime/publish",
            "/v1/middleware/decide",
            "/compat/state/create",
            "/compat/session-state/create",
            "/__user-session/notify?userId=alice",
        ] {
            let mut request = s.post(path).body(body);
            if let Some(t) = content_type {
                request = request.header("content-type", t);
            }
            let (status, reply) = json(request).await;
            assert_error(status, &reply, 415, &format!("{path} {content_type:?}"));
        }
    }
    let (status, reply) = json(
        s.post("/v1/sessions")
            .header("content-type", "application/json; charset=utf-8")
            .body(body),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["id"].as_str().unwrap().to_string();
    let patch = s
        .patch(&format!("/v1/sessions/{id}"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"data":{"a":1}}"#);
    assert_eq!(json(patch).await.0, 200);
    s.stop().await;

    // Keyed: the compat surfaces take a seed client's unlabelled or text/plain JSON when it
    // carries its key; /v1 routes still do not; forms never.
    let s = TestServer::start(EngineKind::Memory, keyed).await;
    for content_type in [None, Some("text/plain;charset=UTF-8")] {
        let mut request = s.post("/compat/state/create").bearer_auth(FULL).body("{}");
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        assert_eq!(json(request).await.0, 201, "compat {content_type:?}");
        let mut request = s.post("/v1/sessions").bearer_auth(FULL).body("{}");
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        assert_eq!(json(request).await.0, 415, "v1 {content_type:?}");
    }
    let form = s
        .post("/compat/state/create")
        .bearer_auth(FULL)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("{}");
    assert_eq!(json(form).await.0, 415);
    // Forward-auth reads only headers; a proxy copies the original form post's onto it.
    let check = s
        .post("/v1/middleware/forward-auth")
        .bearer_auth(FULL)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=b");
    let (status, body) = json(check).await;
    assert!(
        status != 415 && status < 500,
        "forward-auth: {status} {body}"
    );
}

/// Sends `head` (request line and headers) plus `body` over a raw connection and returns the
/// status line and how long the answer took.
async fn raw_request(s: &TestServer, head: &str, body: &[u8]) -> (String, Duration) {
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = started + Duration::from_secs(5);
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
            .await
            .expect("no answer within 5 s: the server is waiting for the body");
        let n = read.unwrap();
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    (
        text.lines().next().unwrap_or("").to_string(),
        started.elapsed(),
    )
}

/// A tenant key announcing a 16 MiB body for a stream it may not touch gets its 403 from the
/// headers alone: the server answers while 16 MiB are still "to come".
#[tokio::test]
async fn stream_scope_is_decided_before_the_body_is_read() {
    let s = TestServer::start(EngineKind::Memory, keyed).await;
    let created = s
        .put("/v1/stream/tenant-b/log")
        .bearer_auth(FULL)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let announced = 16 * 1024 * 1024;
    for (method, path) in [
        ("POST", "/v1/stream/tenant-b/log"),
        ("PUT", "/v1/stream/tenant-b/new"),
    ] {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TENANT}\r\n\
             content-type: application/octet-stream\r\ncontent-length: {announced}\r\n\r\n"
        );
        let (status, took) = raw_request(&s, &head, b"only a few bytes").await;
        assert!(status.contains(" 403 "), "{method} {path}: {status}");
        assert!(
            took < Duration::from_secs(2),
            "{method} answered after {took:?}"
        );
    }
    let (status, body) = json(
        s.post("/v1/stream/tenant-b/log")
            .bearer_auth(TENANT)
            .header("content-type", "application/octet-stream")
            .body("x"),
    )
    .await;
    assert_error(status, &body, 403, "out of scope");
}
