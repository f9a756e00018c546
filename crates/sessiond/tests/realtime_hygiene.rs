//! Realtime state that must not outlive its reason: a revoked grant's still-valid signed
//! grants (refused, also after a restart), the state rows of anonymous `client:` users (gone
//! at their last disconnect), and a dead webhook (it must not hold up the presence stream).
//! Real server, real WebSocket clients, real receivers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use std::time::Duration;

use common::{json, TestServer};
use realtime_support::{connect, eventually, session, Ws};
use serde_json::{json, Value};
use sessiond::config::EngineKind;
use sessiond_realtime::grants::{sign, GrantClaims};

const SERVICE: &str = "service-key-0123456789";
const GRANT_KEY: &str = "grant-key-of-at-least-thirty-two-bytes";

async fn v1(s: &TestServer, user: &str) -> Ws {
    let token = session(s, user, None).await;
    let mut ws = connect(s, &format!("/v1/realtime?token={token}"), &[])
        .await
        .open();
    ws.expect("connected").await;
    ws
}

async fn subscribe(ws: &mut Ws, channel: &str, grant: &str) -> Value {
    ws.send(json!({"type": "subscribe", "id": 1, "channel": channel, "grant": grant}))
        .await;
    ws.next().await
}

fn grant(user: &str, channel: &str, iat: i64) -> String {
    let now = iat.max(1);
    let claims = GrantClaims {
        sub: user.into(),
        ch: channel.into(),
        publish: false,
        iat,
        exp: now + 600,
    };
    sign(GRANT_KEY.as_bytes(), &claims)
}

fn now_s() -> i64 {
    sessiond_store::now_ms() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_grant_voids_signed_grants_issued_before_it_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |data: std::path::PathBuf| {
        TestServer::start(EngineKind::Sqlite, move |c| {
            c.data_dir = data;
            c.realtime.grant_keys = vec![GRANT_KEY.into()];
        })
    };
    let s = start(data.clone()).await;
    let (status, minted) = json(s.post("/v1/realtime/grant-tokens").json(&json!({
        "user_id": "alice", "channel": "room:vip", "ttl_s": 3600
    })))
    .await;
    assert_eq!(status, 200, "{minted}");
    let old = minted["token"].as_str().unwrap().to_string();
    let mut ws = v1(&s, "alice").await;
    assert_eq!(
        subscribe(&mut ws, "room:vip", &old).await["type"],
        "subscribed"
    );
    ws.expect("presence_state").await;

    let res = s
        .delete("/v1/realtime/grants?user_id=alice&channel=room:vip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let ended = ws.expect("unsubscribed").await;
    assert_eq!(ended["reason"], "grant_revoked");
    // The still-valid signed grant no longer lets her back in...
    let refused = subscribe(&mut ws, "room:vip", &old).await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("forbidden")),
        "{refused}"
    );
    // ...a grant issued after the revocation does.
    let fresh = grant("alice", "room:vip", now_s() + 1);
    assert_eq!(
        subscribe(&mut ws, "room:vip", &fresh).await["type"],
        "subscribed"
    );
    ws.expect("presence_state").await;
    ws.close().await;
    s.stop().await;

    // The revocation is persisted with the user's object.
    let s = start(data).await;
    let mut ws = v1(&s, "alice").await;
    let refused = subscribe(&mut ws, "room:vip", &old).await;
    assert_eq!(refused["code"], "forbidden", "after a restart: {refused}");
    assert_eq!(
        subscribe(&mut ws, "room:vip", &fresh).await["type"],
        "subscribed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_client_users_leave_no_state_row() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.middleware.signing_keys = vec!["middleware-signing-key-of-32-bytes!!".into()];
    })
    .await;
    let (status, body) = json(s.post("/v1/middleware/decide").json(&json!({
        "ip": "192.0.2.7", "user_agent": "test-agent/1", "url": "https://app.example/", "method": "GET"
    })))
    .await;
    assert_eq!(status, 200, "{body}");
    let cookie = body["set_cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let user = format!("client:{}", body["session"]["cID"].as_str().unwrap());
    let state = || async {
        let (_, st) = json(s.get(&format!("/__user-session/state?userId={user}"))).await;
        st
    };
    let mut ws = connect(&s, "/v1/realtime", &[("cookie", cookie.as_str())])
        .await
        .open();
    assert_eq!(ws.expect("connected").await["userId"], json!(user));
    assert_eq!(state().await["presence"], "online", "a row while connected");
    ws.close().await;
    // At the last disconnect the empty state is dropped: a user never seen again.
    eventually("the anonymous user's state row is gone", || async {
        let st = state().await;
        st["lastActive"].is_null() && st["presence"] == "offline"
    })
    .await;

    // An account user keeps the row (lastActive, presence offline).
    let mut ws = v1(&s, "alice").await;
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;
    ws.close().await;
    eventually("alice is offline", || async {
        let (_, st) = json(s.get("/__user-session/state?userId=alice")).await;
        st["presence"] == "offline" && st["lastActive"].is_i64()
    })
    .await;
}

/// A webhook endpoint that accepts connections and never answers.
async fn dead_webhook() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_does_not_delay_the_presence_stream() {
    let (url, _hook) = dead_webhook().await;
    let s = TestServer::start(EngineKind::Sqlite, move |c| {
        c.realtime.events.debounce_ms = 100;
        c.realtime.events.webhook_url = url;
        // The receiver is on loopback: allow-listed explicitly (public addresses only by default).
        c.realtime.events.webhook_allow_http = true;
        c.realtime.events.webhook_allowed_networks = vec!["127.0.0.0/8".into()];
        c.realtime.events.webhook_keys = vec!["webhook-key-of-at-least-32-bytes!!".into()];
        c.realtime.events.webhook_timeout_ms = 60_000;
        // The presence stream is server-owned: only a service key reads it.
        c.api_keys = vec![SERVICE.into()];
    })
    .await;
    let token = session(&s, "alice", Some(SERVICE)).await;
    let mut ws = connect(&s, &format!("/v1/realtime?token={token}"), &[])
        .await
        .open();
    ws.expect("connected").await;
    let started = std::time::Instant::now();
    // Online, then (after the debounce) offline: both reach the stream at once although the
    // webhook holds its first delivery for a minute.
    let stream = "/v1/stream/__system/realtime/presence?offset=-1";
    eventually("alice's online event is in the stream", || async {
        let text = s
            .get(stream)
            .bearer_auth(SERVICE)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("user.online")
    })
    .await;
    ws.close().await;
    eventually("alice's offline event is in the stream", || async {
        let text = s
            .get(stream)
            .bearer_auth(SERVICE)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("user.offline")
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A webhook endpoint answering 500 with an endless body to its first call, then 200.
async fn endless_webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<u16>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (tx, calls) = (tx.clone(), calls.clone());
            async move {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                let status = if first { 500 } else { 200 };
                let _ = tx.send(status);
                let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
                let body = match first {
                    true => axum::body::Body::from_stream(futures_util::stream::repeat_with(
                        move || Ok::<_, std::io::Error>(chunk.clone()),
                    )),
                    false => axum::body::Body::empty(),
                };
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answer_is_read_with_a_cap_not_to_its_end() {
    let (url, mut calls) = endless_webhook().await;
    let s = TestServer::start(EngineKind::Memory, move |c| {
        c.realtime.events.debounce_ms = 50;
        c.realtime.events.webhook_url = url;
        // The receiver is on loopback: allow-listed explicitly (public addresses only by default).
        c.realtime.events.webhook_allow_http = true;
        c.realtime.events.webhook_allowed_networks = vec!["127.0.0.0/8".into()];
        c.realtime.events.webhook_keys = vec!["webhook-key-of-at-least-32-bytes!!".into()];
        c.realtime.events.webhook_timeout_ms = 30_000;
        c.realtime.events.webhook_backoff_ms = 10;
    })
    .await;
    let started = std::time::Instant::now();
    let _ws = v1(&s, "alice").await;
    // The first answer is an endless 500: the sink reads 64 KiB of it, gives up on that
    // attempt and retries at once instead of reading (or waiting 30 s) to its end.
    for expected in [500, 200] {
        let status = tokio::time::timeout(Duration::from_secs(10), calls.recv())
            .await
            .expect("webhook call")
            .unwrap();
        assert_eq!(status, expected);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
