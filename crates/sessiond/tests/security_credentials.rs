//! Where each credential is accepted: cookies only from the server's own (or allowed) pages,
//! service keys only in `Authorization`, read tokens only for this audience, prefixes only on
//! segment boundaries. Real server on loopback, real HTTP and WebSocket clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{assert_error, json, TestServer};
use realtime_support::{connect, session};
use serde_json::json;
use sessiond::config::{Config, EngineKind};
use sessiond_http::jwt::sign_hs256;
use sessiond_streams::ScopedKeyConfig;

const FULL: &str = "full-key-0123456789abcdef";
const TENANT: &str = "tenant-a-key-0123456789";
const SECRET: &str = "read-token-secret-0123456789abcdef";
const SIGNING: &str = "middleware-signing-key-0123456789abcdef";

fn keyed(c: &mut Config) {
    c.api_keys = vec![FULL.into()];
    c.streams.keys = vec![ScopedKeyConfig {
        key: TENANT.into(),
        stream_prefixes: vec!["tenant-a".into()],
        read_only: false,
    }];
    c.streams.read_token_secrets = vec![SECRET.into()];
    c.middleware.signing_keys = vec![SIGNING.into()];
    c.realtime.allowed_origins = vec!["https://app.example".into()];
}

/// A socket (and its SSE twin) authenticated by a cookie opens only from the server's own
/// origin or an allowed one; the same socket with a token opens from anywhere.
#[tokio::test]
async fn cookie_sockets_need_a_same_or_allowed_origin() {
    let s = TestServer::start(EngineKind::Memory, keyed).await;
    let token = session(&s, "alice", Some(FULL)).await;
    let cookie = format!("sessiond_session={token}");
    let own = format!("http://{}", s.addr);
    for path in ["/v1/realtime", "/__user-session"] {
        for origin in ["https://evil.example", "null"] {
            let (status, body) = connect(&s, path, &[("cookie", &cookie), ("origin", origin)])
                .await
                .refused();
            assert_error(status, &body, 403, &format!("{path} from {origin}"));
        }
        for origin in [own.as_str(), "https://app.example"] {
            let ws = connect(&s, path, &[("cookie", &cookie), ("origin", origin)])
                .await
                .open();
            ws.close().await;
        }
        // A token is not sent by the browser on its own: any origin.
        let with_token = format!("{path}?token={token}");
        let ws = connect(&s, &with_token, &[("origin", "https://evil.example")])
            .await
            .open();
        ws.close().await;
    }
    let sse = |origin: &str| {
        s.get("/v1/realtime/sse?channels=user:alice")
            .header("cookie", &cookie)
            .header("accept", "text/event-stream")
            .header("origin", origin)
    };
    let (status, body) = json(sse("https://evil.example")).await;
    assert_error(status, &body, 403, "SSE from a foreign origin");
    let res = sse(&own).send().await.unwrap();
    assert_eq!(res.status(), 200);
    drop(res);

    // The middleware's signed cookie (anonymous `client:` user) follows the same rule.
    let (status, decided) = json(
        s.post("/v1/middleware/decide")
            .bearer_auth(FULL)
            .json(&json!({"ip": "192.0.2.7", "user_agent": "t/1", "url": "https://app.example/", "method": "GET"})),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    let browser = decided["set_cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let (status, body) = connect(
        &s,
        "/v1/realtime",
        &[("cookie", &browser), ("origin", "https://evil.example")],
    )
    .await
    .refused();
    assert_error(
        status,
        &body,
        403,
        "middleware cookie from a foreign origin",
    );
    let ws = connect(
        &s,
        "/v1/realtime",
        &[("cookie", &browser), ("origin", &own)],
    )
    .await
    .open();
    ws.close().await;
}

/// A service key is a credential only in `Authorization`: in a query string it would be
/// written to proxy logs.
#[tokio::test]
async fn service_keys_only_in_the_authorization_header() {
    let s = TestServer::start(EngineKind::Memory, keyed).await;
    let (status, body) = connect(&s, &format!("/v1/realtime?token={FULL}&userId=alice"), &[])
        .await
        .refused();
    assert_error(status, &body, 401, "service key as ?token=");
    let auth = format!("Bearer {FULL}");
    let ws = connect(&s, "/v1/realtime?userId=alice", &[("authorization", &auth)])
        .await
        .open();
    ws.close().await;
    let (status, _) = json(s.get(&format!("/v1/realtime/stats?token={FULL}"))).await;
    assert_eq!(status, 401);
    let created = s
        .put("/v1/stream/x")
        .bearer_auth(FULL)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (status, _) = json(s.get(&format!("/v1/stream/x?offset=-1&token={FULL}"))).await;
    assert_eq!(status, 401);
}

fn read_token(claims: serde_json::Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut claims = claims;
    claims["exp"] = json!(now + 60.0);
    claims["session_id"] = json!("s-1");
    sign_hs256(&claims, SECRET.as_bytes())
}

/// Read tokens must name this server's audience; prefixes of keys and tokens match whole
/// path segments.
#[tokio::test]
async fn read_token_audience_and_segment_prefixes() {
    let s = TestServer::start(EngineKind::Memory, keyed).await;
    for name in ["tenant-a/x", "tenant-abc/x"] {
        let res = s
            .put(&format!("/v1/stream/{name}"))
            .bearer_auth(FULL)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let read = |name: &str, token: &str| {
        s.get(&format!("/v1/stream/{name}?offset=-1"))
            .bearer_auth(token)
    };
    for (claims, expected) in [
        (json!({}), 401),
        (json!({"aud": "another-service"}), 401),
        (json!({"aud": ["another-service"]}), 401),
        (json!({"aud": "sessiond"}), 200),
        (json!({"aud": ["another-service", "sessiond"]}), 200),
    ] {
        let (status, body) = json(read("tenant-a/x", &read_token(claims.clone()))).await;
        assert_eq!(status, expected, "{claims}: {body}");
    }
    // `tenant-a` (no slash) is the subtree tenant-a/…, not every name starting with it.
    let scoped = read_token(json!({"aud": "sessiond", "stream_prefixes": ["tenant-a"]}));
    assert_eq!(json(read("tenant-a/x", &scoped)).await.0, 200);
    assert_eq!(json(read("tenant-abc/x", &scoped)).await.0, 403);
    assert_eq!(json(read("tenant-a/x", TENANT)).await.0, 200);
    let (status, body) = json(read("tenant-abc/x", TENANT)).await;
    assert_error(status, &body, 403, "tenant-a key on tenant-abc");
    let res = s
        .put("/v1/stream/tenant-abc/y")
        .bearer_auth(TENANT)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    s.stop().await;

    // The audience is configurable.
    let s = TestServer::start(EngineKind::Memory, |c| {
        keyed(c);
        c.streams.read_token_audience = "my-app".into();
    })
    .await;
    let res = s
        .put("/v1/stream/tenant-a/x")
        .bearer_auth(FULL)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let get = |token: String| s.get("/v1/stream/tenant-a/x?offset=-1").bearer_auth(token);
    assert_eq!(json(get(read_token(json!({"aud": "my-app"})))).await.0, 200);
    assert_eq!(
        json(get(read_token(json!({"aud": "sessiond"})))).await.0,
        401
    );
}
