//! The `__ds` subscription APIs with API keys configured: management needs the key, the
//! webhook is signed, the callback authenticates with the wake's own token (no API key), a
//! replayed callback is fenced, and CORS preflights pass the key guard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::routing::post;
use common::{json, TestServer};
use serde_json::{json as j, Value};
use sessiond::config::EngineKind;
use tokio::sync::Notify;

const KEY: &str = "test-key-0123456789";

type Received = Arc<(Mutex<Vec<(String, Value)>>, Notify)>;

/// A loopback webhook receiver answering `{}`; returns its URL and what it received.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::new((Mutex::new(Vec::new()), Notify::new()));
    let r = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                let sig = headers["webhook-signature"].to_str().unwrap().to_string();
                let body: Value = serde_json::from_slice(&body).unwrap();
                r.0.lock().unwrap().push((sig, body));
                r.1.notify_one();
                axum::Json(j!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

#[tokio::test]
async fn webhook_flow_with_api_keys() {
    let server = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![KEY.into()];
        c.streams.allow_insecure_webhooks = true;
    })
    .await;
    let (hook, received) = receiver().await;
    let sub = "/v1/stream/__ds/subscriptions/s1";
    let config = j!({"type": "webhook", "pattern": "ev/*", "webhook": {"url": hook}});

    let (status, _) = json(server.put(sub).json(&config)).await;
    assert_eq!(status, 401, "management needs the API key");
    let (status, body) = json(server.put(sub).bearer_auth(KEY).json(&config)).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["webhook"]["signing"]["kid"]
        .as_str()
        .unwrap()
        .starts_with("ds_"));

    let res = server
        .put("/v1/stream/ev/a")
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (sig, wake) = loop {
        let notified = received.1.notified();
        if let Some(first) = received.0.lock().unwrap().first().cloned() {
            break first;
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), notified)
            .await
            .expect("webhook delivered");
    };
    assert!(sig.starts_with("t=") && sig.contains(",kid=ds_") && sig.contains(",ed25519="));
    assert_eq!(wake["subscription_id"], "s1");
    let tail = wake["streams"][0]["tail_offset"].clone();
    let ack = j!({
        "wake_id": wake["wake_id"],
        "generation": wake["generation"],
        "acks": [{"stream": "ev/a", "offset": tail}],
        "done": true,
    });
    let callback = wake["callback_url"].as_str().unwrap().to_string();
    let token = wake["callback_token"].as_str().unwrap().to_string();
    // The wake token, not an API key, authenticates the callback.
    let http = reqwest::Client::new();
    let (status, body) = json(http.post(&callback).bearer_auth(&token).json(&ack)).await;
    assert_eq!((status, body), (200, j!({"ok": true, "next_wake": false})));
    let (status, body) = json(http.post(&callback).bearer_auth(&token).json(&ack)).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "FENCED");

    let (_, view) = json(server.get(sub).bearer_auth(KEY)).await;
    assert_eq!(view["streams"][0]["acked_offset"], tail);

    // Keys are published without the API key guard getting in the way of receivers.
    let res = server
        .get("/v1/stream/__ds/jwks.json")
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/jwk-set+json"
    );
    server.stop().await;
}

#[tokio::test]
async fn cors_preflight_passes_the_api_key_guard() {
    let server = TestServer::start(EngineKind::Memory, |c| c.api_keys = vec![KEY.into()]).await;
    let res = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/v1/stream/any/path"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert!(res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Authorization"));
    // The real request still needs the key.
    let res = server.get("/v1/stream/any/path").send().await.unwrap();
    assert_eq!(res.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_and_the_signing_key_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || {
        let data = data.clone();
        TestServer::start(EngineKind::Sqlite, move |c| c.data_dir = data)
    };
    let server = start().await;
    let res = server
        .put("/v1/stream/wake/pool")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let config = j!({"type": "pull-wake", "streams": ["jobs/a"], "wake_stream": "wake/pool"});
    let sub = "/v1/stream/__ds/subscriptions/p1";
    let (status, _) = json(server.put(sub).json(&config)).await;
    assert_eq!(status, 201);
    let (_, jwks) = json(server.get("/v1/stream/__ds/jwks.json")).await;
    server.stop().await;

    let server = start().await;
    let (status, view) = json(server.get(sub)).await;
    assert_eq!(status, 200);
    assert_eq!(view["streams"][0]["path"], "jobs/a");
    assert_eq!(view["streams"][0]["link_type"], "explicit");
    let (status, _) = json(server.put(sub).json(&config)).await;
    assert_eq!(
        status, 200,
        "identical re-PUT after restart is a re-confirmation"
    );
    let (_, again) = json(server.get("/v1/stream/__ds/jwks.json")).await;
    assert_eq!(jwks, again, "the signing key is persisted");
    // Appends after the restart still wake the subscription.
    let res = server
        .put("/v1/stream/jobs/a")
        .header("content-type", "text/plain")
        .body("work")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut woke = false;
    for _ in 0..100 {
        let (_, events) = json(server.get("/v1/stream/wake/pool?offset=-1")).await;
        if events.as_array().is_some_and(|e| !e.is_empty()) {
            assert_eq!(events[0]["subscription_id"], "p1");
            woke = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(woke, "a wake event was written after the restart");
    server.stop().await;
}
