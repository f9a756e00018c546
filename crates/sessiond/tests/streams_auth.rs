//! Durable Streams auth through a real listener: prefix-scoped API keys (every verb, fork
//! sources, other route sets) and HS256 read tokens (header, `?token=`, SSE, rotation,
//! expiry, forgeries, write attempts, `Cache-Control: no-store`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{json, TestServer};
use serde_json::{json, Value};
use sessiond::config::{Config, EngineKind};
use sessiond_http::jwt::{sign_hs256, sign_with_header};
use sessiond_streams::ScopedKeyConfig;

const FULL: &str = "full-access-key-0123";
const TENANT_A: &str = "tenant-a-key-0123456";
const READER_A: &str = "tenant-a-reader-key";
const SECRET_NEW: &str = "new-read-token-secret-0123456789abcdef";
const SECRET_OLD: &str = "old-read-token-secret-0123456789abcdef";

fn configure(c: &mut Config) {
    c.api_keys = vec![FULL.into()];
    c.streams.long_poll_timeout_ms = 300;
    c.streams.keys = vec![
        ScopedKeyConfig {
            key: TENANT_A.into(),
            stream_prefixes: vec!["tenant-a/".into()],
            read_only: false,
        },
        ScopedKeyConfig {
            key: READER_A.into(),
            stream_prefixes: vec!["tenant-a/".into()],
            read_only: true,
        },
    ];
    c.streams.read_token_secrets = vec![SECRET_NEW.into(), SECRET_OLD.into()];
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A token for session `s-1`, valid for a minute, signed with `secret`.
fn token(secret: &str) -> String {
    sign_hs256(
        &json!({"aud": "sessiond", "session_id": "s-1", "exp": now_s() + 60.0}),
        secret.as_bytes(),
    )
}

/// Sends `req` and returns (status, cache-control, body as JSON or Null).
async fn send(req: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let cache = res
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = serde_json::from_str(&res.text().await.unwrap()).unwrap_or(Value::Null);
    (status, cache, body)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

async fn create(s: &TestServer, key: &str, path: &str, body: &str) -> u16 {
    s.put(path)
        .bearer_auth(key)
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn read_all(s: &TestServer, path: &str) -> String {
    let res = s
        .get(&format!("{path}?offset=-1"))
        .bearer_auth(FULL)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "full key reads {path}");
    res.text().await.unwrap()
}

/// Every verb of one key on one stream, as statuses: PUT, POST, GET, HEAD, DELETE.
async fn verbs(s: &TestServer, key: &str, path: &str) -> Vec<(&'static str, u16, String)> {
    let requests = [
        ("PUT", s.put(path).header("content-type", "text/plain")),
        (
            "POST",
            s.post(path).header("content-type", "text/plain").body("x"),
        ),
        ("GET", s.get(&format!("{path}?offset=-1"))),
        ("HEAD", s.http.head(s.url(path))),
        ("DELETE", s.delete(path)),
    ];
    let mut out = Vec::new();
    for (verb, req) in requests {
        let (status, _, body) = send(req.bearer_auth(key)).await;
        out.push((verb, status, code(&body).to_owned()));
    }
    out
}

#[tokio::test]
async fn scoped_keys_act_only_under_their_prefixes() {
    let s = TestServer::start(EngineKind::Sqlite, configure).await;
    assert_eq!(
        create(&s, FULL, "/v1/stream/tenant-b/log", "b-data").await,
        201
    );

    // In scope: every verb works, including a fork of an in-scope source.
    assert_eq!(
        create(&s, TENANT_A, "/v1/stream/tenant-a/log", "a-data").await,
        201
    );
    let res = s
        .post("/v1/stream/tenant-a/log")
        .bearer_auth(TENANT_A)
        .header("content-type", "text/plain")
        .body("+more")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (status, _, _) = send(
        s.get("/v1/stream/tenant-a/log?offset=-1")
            .bearer_auth(TENANT_A),
    )
    .await;
    assert_eq!(status, 200);
    let res = s
        .http
        .head(s.url("/v1/stream/tenant-a/log"))
        .bearer_auth(TENANT_A)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = s
        .put("/v1/stream/tenant-a/fork")
        .bearer_auth(TENANT_A)
        .header("content-type", "text/plain")
        .header("stream-forked-from", "/v1/stream/tenant-a/log")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "fork inside the prefix");
    assert_eq!(
        read_all(&s, "/v1/stream/tenant-a/fork").await,
        "a-data+more"
    );
    let (status, _, _) = send(s.delete("/v1/stream/tenant-a/fork").bearer_auth(TENANT_A)).await;
    assert_eq!(status, 204);

    // Out of scope: 403 `forbidden` for every verb, on existing and missing streams alike,
    // and for a look-alike prefix without the slash.
    for path in [
        "/v1/stream/tenant-b/log",
        "/v1/stream/tenant-b/missing",
        "/v1/stream/tenant-ab/log",
        "/v1/stream/tenant-a",
    ] {
        for (verb, status, code) in verbs(&s, TENANT_A, path).await {
            assert_eq!(status, 403, "{verb} {path}");
            if verb != "HEAD" {
                assert_eq!(code, "forbidden", "{verb} {path}");
            }
        }
    }
    // A fork needs the source in scope too, in both directions.
    for (target, source) in [
        ("/v1/stream/tenant-a/stolen", "/v1/stream/tenant-b/log"),
        ("/v1/stream/tenant-b/planted", "/v1/stream/tenant-a/log"),
    ] {
        let (status, _, body) = send(
            s.put(target)
                .bearer_auth(TENANT_A)
                .header("content-type", "text/plain")
                .header("stream-forked-from", source),
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (403, "forbidden"),
            "fork {source} -> {target}"
        );
    }
    let (status, _, _) = send(
        s.get("/v1/stream/tenant-a/stolen?offset=-1")
            .bearer_auth(FULL),
    )
    .await;
    assert_eq!(status, 404, "the refused fork was not created");
    assert_eq!(
        read_all(&s, "/v1/stream/tenant-b/log").await,
        "b-data",
        "untouched"
    );

    // A read-only scoped key reads its prefix and writes nothing.
    let got: Vec<(&str, u16)> = verbs(&s, READER_A, "/v1/stream/tenant-a/log")
        .await
        .into_iter()
        .map(|(verb, status, _)| (verb, status))
        .collect();
    assert_eq!(
        got,
        [
            ("PUT", 403),
            ("POST", 403),
            ("GET", 200),
            ("HEAD", 200),
            ("DELETE", 403)
        ]
    );
    assert_eq!(read_all(&s, "/v1/stream/tenant-a/log").await, "a-data+more");
}

#[tokio::test]
async fn scoped_keys_cannot_reach_other_route_sets() {
    let s = TestServer::start(EngineKind::Memory, configure).await;
    let requests = [
        s.post("/v1/sessions").json(&json!({"user_id": "u"})),
        s.get("/v1/users/u/sessions"),
        s.put("/v1/cache/ns/k").json(&json!({"data": 1})),
        s.post("/compat/session-state/create").body("{}"),
        s.put("/v1/stream/__ds/subscriptions/sub-1").json(&json!({
            "pattern": "tenant-a/**", "delivery": "pull-wake", "wake_stream": "tenant-a/wake"
        })),
    ];
    for req in requests {
        let (status, body) = json(req.bearer_auth(TENANT_A)).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    }
    // The full key still reaches them; unknown and missing keys are 401.
    let (status, _) = json(s.post("/v1/sessions").bearer_auth(FULL).json(&json!({}))).await;
    assert_eq!(status, 201);
    let (status, body) = json(s.get("/v1/stream/tenant-a/x").bearer_auth("nope")).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, body) = json(s.put("/v1/stream/tenant-a/x")).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
}

#[tokio::test]
async fn read_tokens_read_and_never_write() {
    let s = TestServer::start(EngineKind::Memory, configure).await;
    let url = "/v1/stream/tenant-a/feed";
    assert_eq!(create(&s, FULL, url, "hello").await, 201);
    let read_url = format!("{url}?offset=-1");

    // Valid: bearer with the newest and with the older (rotated) secret; HEAD; ?token=.
    for secret in [SECRET_NEW, SECRET_OLD] {
        let res = s
            .get(&read_url)
            .bearer_auth(token(secret))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert_eq!(res.text().await.unwrap(), "hello");
    }
    let res = s
        .http
        .head(s.url(url))
        .bearer_auth(token(SECRET_NEW))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let (status, cache, _) = send(s.get(&format!("{read_url}&token={}", token(SECRET_NEW)))).await;
    assert_eq!((status, cache.as_deref()), (200, Some("no-store")));

    // Refused: 401 `unauthorized`, no-store, with `token expired` for an expired one.
    let expired = sign_hs256(
        &json!({"aud": "sessiond", "session_id": "s-1", "exp": now_s() - 5.0}),
        SECRET_NEW.as_bytes(),
    );
    let (status, cache, body) = send(s.get(&read_url).bearer_auth(&expired)).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    assert_eq!(body["error"]["message"], "token expired");
    assert_eq!(cache.as_deref(), Some("no-store"));
    let good = token(SECRET_NEW);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = sign_hs256(
        &json!({"aud": "sessiond", "session_id": "admin", "exp": now_s() + 60.0}),
        b"x",
    )
    .split('.')
    .nth(1)
    .unwrap()
    .to_owned();
    let tampered = parts.join(".");
    let alg_none = {
        let signed = sign_with_header(
            &json!({"alg": "none"}),
            &json!({"aud": "sessiond", "session_id": "s-1", "exp": now_s() + 60.0}),
            b"",
        );
        let cut = signed.rfind('.').unwrap();
        format!("{}.", &signed[..cut])
    };
    let refused = [
        ("tampered payload", tampered),
        ("alg none", alg_none),
        (
            "wrong secret",
            token("some-other-secret-0123456789abcdefgh"),
        ),
        (
            "no session_id",
            sign_hs256(
                &json!({"aud": "sessiond", "exp": now_s() + 60.0}),
                SECRET_NEW.as_bytes(),
            ),
        ),
        ("not a token", "garbage".to_owned()),
    ];
    for (what, bad) in &refused {
        let (status, cache, body) = send(s.get(&read_url).bearer_auth(bad)).await;
        assert_eq!(
            (status, code(&body)),
            (401, "unauthorized"),
            "{what}: {body}"
        );
        assert_eq!(cache.as_deref(), Some("no-store"), "{what}");
        let (status, cache, _) = send(s.get(&format!("{read_url}&token={bad}"))).await;
        assert_eq!(
            (status, cache.as_deref()),
            (401, Some("no-store")),
            "{what} in query"
        );
    }

    // A valid token cannot write, by header or query, and the stream is unchanged.
    let t = token(SECRET_NEW);
    let writes = [
        s.post(url)
            .bearer_auth(&t)
            .header("content-type", "text/plain")
            .body("x"),
        s.post(format!("{url}?token={t}").as_str())
            .header("content-type", "text/plain")
            .body("x"),
        s.put("/v1/stream/tenant-a/new")
            .bearer_auth(&t)
            .header("content-type", "text/plain"),
        s.delete(url).bearer_auth(&t),
        s.delete(format!("{url}?token={t}").as_str()),
    ];
    for req in writes {
        let (status, _, body) = send(req).await;
        assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    }
    assert_eq!(read_all(&s, url).await, "hello");
    // Nor reach other route sets.
    let (status, _) = json(s.get("/v1/users/u/sessions").bearer_auth(&t)).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn read_tokens_scoped_to_prefixes_and_sse() {
    let s = TestServer::start(EngineKind::Memory, configure).await;
    let url = "/v1/stream/tenant-a/live";
    assert_eq!(create(&s, FULL, url, "first").await, 201);
    assert_eq!(
        create(&s, FULL, "/v1/stream/tenant-b/live", "other").await,
        201
    );
    let scoped = sign_hs256(
        &json!({"aud": "sessiond", "session_id": "s-2", "exp": now_s() + 60.0, "stream_prefixes": ["tenant-a/"]}),
        SECRET_NEW.as_bytes(),
    );
    let (status, cache, _) = send(s.get(&format!("{url}?offset=-1")).bearer_auth(&scoped)).await;
    assert_eq!((status, cache.as_deref()), (200, Some("no-store")));
    let (status, cache, body) = send(
        s.get("/v1/stream/tenant-b/live?offset=-1")
            .bearer_auth(&scoped),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    assert_eq!(cache.as_deref(), Some("no-store"));

    // EventSource cannot set headers: SSE with the token in the query.
    let mut res = s
        .get(&format!("{url}?offset=-1&live=sse&token={scoped}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("first") {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .expect("SSE data within 10 s")
            .unwrap()
            .expect("stream still open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn without_secrets_tokens_are_not_accepted() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        configure(c);
        c.streams.read_token_secrets.clear();
    })
    .await;
    assert_eq!(create(&s, FULL, "/v1/stream/tenant-a/x", "x").await, 201);
    let (status, body) = json(
        s.get("/v1/stream/tenant-a/x?offset=-1")
            .bearer_auth(token(SECRET_NEW)),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
}

#[test]
fn auth_config_is_validated_and_redacted() {
    let mut config = Config::default();
    configure(&mut config);
    config.validate().unwrap();
    let shown = config.to_redacted_toml().unwrap();
    for secret in [FULL, TENANT_A, READER_A, SECRET_NEW, SECRET_OLD] {
        assert!(!shown.contains(secret), "{secret} shown by check-config");
    }
    assert!(shown.contains("tenant-a/"), "prefixes stay visible");

    type Spoil = fn(&mut Config);
    let rejected: [(&str, Spoil); 5] = [
        ("short secret", |c| {
            c.streams.read_token_secrets = vec!["short".into()]
        }),
        ("scoped key equal to a full key", |c| {
            c.streams.keys[0].key = FULL.into()
        }),
        ("repeated scoped key", |c| {
            c.streams.keys[1].key = TENANT_A.into()
        }),
        ("no prefixes", |c| c.streams.keys[0].stream_prefixes.clear()),
        ("absolute prefix", |c| {
            c.streams.keys[0].stream_prefixes = vec!["/v1/stream/a/".into()]
        }),
    ];
    for (what, spoil) in rejected {
        let mut config = Config::default();
        configure(&mut config);
        spoil(&mut config);
        assert!(config.validate().is_err(), "{what} accepted");
    }
}
