//! Server-owned streams and the public endpoints: what no credential may do, and what the
//! server still does internally. Real server on loopback, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{assert_error, json, TestServer};
use serde_json::json;
use sessiond::config::{Config, EngineKind, RouteSet};
use sessiond_http::jwt::sign_hs256;
use sessiond_streams::ScopedKeyConfig;

const FULL: &str = "full-key-0123456789abcdef";
const TENANT: &str = "tenant-key-0123456789";
const SECRET: &str = "read-token-secret-0123456789abcdef";

/// The server-owned streams of this configuration.
const OWNED: [&str; 5] = [
    "__sessiond/middleware/events",
    "__system/realtime/presence",
    "__sessiond/anything",
    "__system/x/y",
    "_system/metrics",
];

fn keyed(c: &mut Config) {
    c.api_keys = vec![FULL.into()];
    // A tenant whose prefixes name the reserved spaces still gets nothing there.
    c.streams.keys = vec![ScopedKeyConfig {
        key: TENANT.into(),
        stream_prefixes: vec![
            "__sessiond".into(),
            "__system".into(),
            "_system".into(),
            "app".into(),
        ],
        read_only: false,
    }];
    c.streams.read_token_secrets = vec![SECRET.into()];
    c.streams.metrics_stream = Some("_system/metrics".into());
    c.streams.metrics_interval_s = 1;
}

fn any_stream_token() -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 60.0;
    // No stream_prefixes: any stream — but not the server's.
    sign_hs256(
        &json!({"aud": "sessiond", "session_id": "s-1", "exp": exp}),
        SECRET.as_bytes(),
    )
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    json(request).await.0
}

/// Writes are refused to everyone; reads need the full service key; the server still
/// appends its metrics snapshots.
#[tokio::test]
async fn server_owned_streams_are_read_only_for_the_service_key() {
    let s = TestServer::start(EngineKind::Memory, keyed).await;
    let token = any_stream_token();
    for name in OWNED {
        let url = format!("/v1/stream/{name}");
        for credential in [FULL, TENANT] {
            assert_eq!(
                status_of(s.put(&url).bearer_auth(credential)).await,
                403,
                "PUT {name}"
            );
            let append = s
                .post(&url)
                .bearer_auth(credential)
                .header("content-type", "application/json")
                .body("[1]");
            assert_eq!(status_of(append).await, 403, "POST {name}");
            assert_eq!(
                status_of(s.delete(&url).bearer_auth(credential)).await,
                403,
                "DELETE {name}"
            );
        }
        let read = format!("{url}?offset=-1");
        assert_eq!(
            status_of(s.get(&read).bearer_auth(TENANT)).await,
            403,
            "tenant GET {name}"
        );
        assert_eq!(
            status_of(s.get(&read).bearer_auth(&token)).await,
            403,
            "token GET {name}"
        );
        let head = s.http.head(s.url(&url)).bearer_auth(&token);
        assert_eq!(status_of(head).await, 403, "token HEAD {name}");
        let (status, body) = json(s.get(&read).bearer_auth(TENANT)).await;
        assert_error(status, &body, 403, "a JSON error");
        assert_eq!(status_of(s.get(&read)).await, 401, "anonymous GET {name}");
        // A fork cannot copy one out either.
        let fork = s
            .put("/v1/stream/app/copy")
            .bearer_auth(TENANT)
            .header("stream-forked-from", format!("/v1/stream/{name}"));
        assert_eq!(status_of(fork).await, 403, "fork of {name}");
    }
    // The service key reads what the server writes internally (metrics every second).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = s
            .get("/v1/stream/_system/metrics?offset=-1")
            .bearer_auth(FULL)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            let body = res.text().await.unwrap();
            if body.len() > 2 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics snapshot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ordinary streams are unaffected.
    assert_eq!(
        status_of(s.put("/v1/stream/app/x").bearer_auth(FULL)).await,
        201
    );
    assert_eq!(
        status_of(s.get("/v1/stream/app/x?offset=-1").bearer_auth(&token)).await,
        200
    );
}

/// Neither open mode nor `open_routes` opens them.
#[tokio::test]
async fn open_mode_and_open_routes_do_not_open_server_owned_streams() {
    let open = TestServer::start(EngineKind::Memory, |_| {}).await;
    let keyed_open = TestServer::start(EngineKind::Memory, |c| {
        c.api_keys = vec![FULL.into()];
        c.open_routes = vec![RouteSet::Streams];
    })
    .await;
    for s in [&open, &keyed_open] {
        for name in ["__sessiond/middleware/events", "__system/realtime/presence"] {
            let url = format!("/v1/stream/{name}");
            assert_eq!(
                status_of(s.get(&format!("{url}?offset=-1"))).await,
                403,
                "GET {name}"
            );
            assert_eq!(status_of(s.put(&url)).await, 403, "PUT {name}");
            assert_eq!(status_of(s.delete(&url)).await, 403, "DELETE {name}");
        }
        assert_eq!(
            status_of(s.put("/v1/stream/app/y")).await,
            201,
            "open streams stay open"
        );
    }
}

/// `/readyz` never shows the engine's error (hosts, ports, paths); the subscriptions' public
/// key set is public.
#[tokio::test]
async fn readyz_hides_engine_errors_and_jwks_is_public() {
    let s = TestServer::start(EngineKind::Memory, |c| c.api_keys = vec![FULL.into()]).await;
    let (status, jwks) = json(s.get("/v1/stream/__ds/jwks.json")).await;
    assert_eq!(status, 200, "{jwks}");
    assert!(jwks["keys"].is_array(), "{jwks}");
    s.stop().await;

    let mut s = TestServer::start(EngineKind::Redis, |c| c.api_keys = vec![FULL.into()]).await;
    // Serving first (the engine is opened before the listener answers).
    assert_eq!(json(s.get("/readyz")).await.0, 200);
    s.kill_redis();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = json(s.get("/readyz")).await;
        if status == 503 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = body.to_string();
    assert_eq!(body["status"], "unavailable");
    for leak in ["refused", "os error", "127.0.0.1", "redis://"] {
        assert!(!text.contains(leak), "readyz leaks `{leak}`: {text}");
    }
}
