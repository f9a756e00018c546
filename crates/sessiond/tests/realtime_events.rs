//! User online/offline events: debounced per user, delivered to a real webhook receiver (HMAC
//! signature, retry after a failure) and appended to the system Durable Stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use common::{json, TestServer};
use hmac::{Hmac, KeyInit, Mac};
use realtime_support::{connect, eventually, session, WAIT};
use serde_json::Value;
use sessiond::config::EngineKind;
use sha2::Sha256;
use tokio::sync::mpsc;

/// A webhook receiver on a loopback port: answers 500 to the first call, then 200.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(HeaderMap, String, u16)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (tx, calls) = (tx.clone(), calls.clone());
            async move {
                let status = if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    500
                } else {
                    200
                };
                let _ = tx.send((headers, body, status));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

/// Checks `Sessiond-Signature: t=…,v1=…` against `key` and the body.
fn assert_signed(headers: &HeaderMap, body: &str, key: &str) {
    let sig = headers["sessiond-signature"].to_str().unwrap();
    let mut parts = sig.split(',');
    let t = parts.next().unwrap().strip_prefix("t=").unwrap();
    let v1 = parts.next().unwrap().strip_prefix("v1=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "signature over t.body");
}

async fn next_delivery(
    rx: &mut mpsc::UnboundedReceiver<(HeaderMap, String, u16)>,
) -> (HeaderMap, Value, String, u16) {
    let (headers, body, status) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("webhook call")
        .unwrap();
    let event: Value = serde_json::from_str(&body).unwrap();
    (headers, event, body, status)
}

const SERVICE: &str = "service-key-0123456789";
const PRESENCE: &str = "/v1/stream/__system/realtime/presence?offset=-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_offline_is_debounced_signed_retried_and_streamed() {
    let (url, mut calls) = receiver().await;
    let s = TestServer::start(EngineKind::Sqlite, move |c| {
        c.realtime.events.debounce_ms = 1500;
        c.realtime.events.webhook_url = url;
        // The receiver is on loopback: allow-listed explicitly (public addresses only by default).
        c.realtime.events.webhook_allow_http = true;
        c.realtime.events.webhook_allowed_networks = vec!["127.0.0.0/8".into()];
        c.realtime.events.webhook_keys = vec!["hook-key-of-at-least-32-bytes-long!".into()];
        c.realtime.events.webhook_backoff_ms = 20;
        // The presence stream is server-owned: only a service key reads it.
        c.api_keys = vec![SERVICE.into()];
    })
    .await;
    let token = session(&s, "alice", Some(SERVICE)).await;
    let path = format!("/__user-session?deviceId=tab&token={token}");

    // A tab reload: the socket closes and reopens within the debounce window.
    let mut ws = connect(&s, &path, &[]).await.open();
    ws.expect("initial_state").await;
    ws.close().await;
    let mut ws = connect(&s, &path, &[]).await.open();
    ws.expect("initial_state").await;

    // One online event: first delivery refused (500), retried with the same event.
    let (headers, first, raw, status) = next_delivery(&mut calls).await;
    assert_eq!(status, 500);
    assert_signed(&headers, &raw, "hook-key-of-at-least-32-bytes-long!");
    assert_eq!(first["type"], "user.online");
    assert_eq!(first["user_id"], "alice");
    assert!(first["at"].is_i64());
    let (headers, retry, raw, status) = next_delivery(&mut calls).await;
    assert_eq!(status, 200);
    assert_signed(&headers, &raw, "hook-key-of-at-least-32-bytes-long!");
    assert_eq!(retry, first, "a retry resends the same event (same id)");

    // The last socket closes for good: one offline event, no flicker before it.
    ws.close().await;
    let (_, offline, _, status) = next_delivery(&mut calls).await;
    assert_eq!(status, 200);
    assert_eq!(offline["type"], "user.offline");
    assert_ne!(offline["id"], first["id"]);

    // The same events are in the system stream, in order.
    eventually("both events are in the stream", || async {
        let (status, body) = json(s.get(PRESENCE).bearer_auth(SERVICE)).await;
        status == 200 && body.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let (_, body) = json(s.get(PRESENCE).bearer_auth(SERVICE)).await;
    assert_eq!(body[0]["type"], "user.online");
    assert_eq!(body[0]["id"], first["id"]);
    assert_eq!(body[1]["type"], "user.offline");
    assert!(calls.try_recv().is_err(), "no other webhook call");
}
