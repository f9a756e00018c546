//! Realtime sockets identified by the session middleware's signed cookie (the anonymous user
//! `client:<cID>`), over a real server and a real WebSocket client: both cookie layouts,
//! tampering, `userId` mismatch, the reserved `client:` namespace, signing-key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{assert_error, json, TestServer};
use realtime_support::{connect, session, Ws};
use serde_json::{json, Value};
use sessiond::config::{Config, EngineKind};
use sessiond_middleware::CookieLayout;

const KEY_1: &str = "first-signing-key-of-at-least-32-bytes";
const KEY_2: &str = "second-signing-key-of-at-least-32-bytes";

fn keyed(keys: &[&str], layout: CookieLayout) -> impl FnOnce(&mut Config) {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    move |c: &mut Config| {
        c.middleware.signing_keys = keys;
        c.middleware.cookies.layout = layout;
    }
}

/// A first visit through `POST /v1/middleware/decide`: the client id and the `Cookie` header
/// the browser sends afterwards.
async fn browser_cookies(s: &TestServer) -> (String, String) {
    let (status, body) = json(s.post("/v1/middleware/decide").json(&json!({
        "ip": "192.0.2.7", "user_agent": "test-agent/1", "url": "https://app.example/", "method": "GET"
    })))
    .await;
    assert_eq!(status, 200, "decide: {body}");
    let cookie = body["set_cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(!cookie.is_empty(), "{body}");
    (body["session"]["cID"].as_str().unwrap().to_string(), cookie)
}

async fn open_v1(s: &TestServer, query: &str, cookie: &str) -> Ws {
    let mut ws = connect(s, &format!("/v1/realtime?{query}"), &[("cookie", cookie)])
        .await
        .open();
    let _ = ws.expect("connected").await;
    ws
}

async fn connected_user(s: &TestServer, query: &str, cookie: &str) -> Value {
    let mut ws = connect(s, &format!("/v1/realtime?{query}"), &[("cookie", cookie)])
        .await
        .open();
    let hello = ws.expect("connected").await;
    ws.close().await;
    hello["userId"].clone()
}

async fn refused(s: &TestServer, path: &str, cookie: &str) -> (u16, Value) {
    connect(s, path, &[("cookie", cookie)]).await.refused()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_cookie_makes_a_browser_the_client_user_in_both_layouts() {
    for layout in [CookieLayout::A, CookieLayout::Compact] {
        let s = TestServer::start(EngineKind::Memory, keyed(&[KEY_1], layout)).await;
        let (cid, cookie) = browser_cookies(&s).await;
        let user = format!("client:{cid}");

        // Both protocols accept the cookie; the socket belongs to client:<cID>.
        assert_eq!(
            connected_user(&s, "deviceId=tab-1", &cookie).await,
            user.as_str(),
            "{layout:?}"
        );
        let mut seed = connect(&s, "/__user-session?deviceId=tab-1", &[("cookie", &cookie)])
            .await
            .open();
        assert_eq!(seed.expect("initial_state").await["userId"], user.as_str());
        seed.close().await;
        // A matching userId is fine; any other is a 403.
        let q = format!("userId={user}");
        assert_eq!(connected_user(&s, &q, &cookie).await, user.as_str());
        for path in ["/v1/realtime?userId=alice", "/__user-session?userId=alice"] {
            let (status, body) = refused(&s, path, &cookie).await;
            assert_error(status, &body, 403, path);
        }

        // Per-browser multi-tab sync: two tabs share the personal channel user:client:<cID>.
        let channel = format!("user:{user}");
        let mut tab1 = open_v1(&s, "deviceId=tab-1", &cookie).await;
        let mut tab2 = open_v1(&s, "deviceId=tab-2", &cookie).await;
        for tab in [&mut tab1, &mut tab2] {
            tab.send(json!({"type": "subscribe", "channel": channel}))
                .await;
            tab.expect("subscribed").await;
            tab.expect("presence_state").await;
        }
        tab1.expect("presence_diff").await;
        tab1.send(json!({"type": "publish", "channel": channel, "data": "cart"}))
            .await;
        let m = tab2.expect("message").await;
        assert_eq!(
            (m["from"].clone(), m["data"].clone()),
            (json!(user), json!("cart"))
        );
        // It is not a real user: another user's channel stays forbidden.
        tab1.send(json!({"type": "subscribe", "id": 9, "channel": "user:alice"}))
            .await;
        tab1.expect("message").await;
        tab1.expect("published").await;
        assert_eq!(tab1.expect("error").await["code"], "forbidden");
        tab1.close().await;
        tab2.close().await;

        // A tampered cookie proves nothing: 401.
        let tampered = tamper(&cookie);
        for path in ["/v1/realtime", "/__user-session"] {
            let (status, body) = refused(&s, path, &tampered).await;
            assert_error(status, &body, 401, &format!("{layout:?} tampered {path}"));
        }
        s.stop().await;
    }
}

/// Changes one character of every cookie's signature tag.
fn tamper(cookie: &str) -> String {
    cookie
        .split("; ")
        .map(|pair| {
            // Inside the tag (its last character carries padding bits).
            let mut chars: Vec<char> = pair.chars().collect();
            let at = chars.len() - 5;
            chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
            chars.into_iter().collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_come_first_and_the_client_namespace_is_reserved() {
    let s = TestServer::start(EngineKind::Memory, keyed(&[KEY_1], CookieLayout::A)).await;
    let (cid, cookie) = browser_cookies(&s).await;
    // A token and the cookie: the token's user wins.
    let alice = session(&s, "alice", None).await;
    let q = format!("token={alice}");
    assert_eq!(connected_user(&s, &q, &cookie).await, "alice");
    // An invalid token does not fall back to the cookie.
    let (status, body) = refused(&s, "/v1/realtime?token=nope", &cookie).await;
    assert_error(status, &body, 401, "bad token with a cookie");
    // A session cannot claim a browser's identity.
    let squatter = session(&s, &format!("client:{cid}"), None).await;
    let (status, body) = refused(&s, &format!("/v1/realtime?token={squatter}"), "").await;
    assert_error(status, &body, 403, "session in the client: namespace");
    s.stop().await;

    // realtime.middleware_clients = false: the cookie is not a credential.
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.middleware.signing_keys = vec![KEY_1.into()];
        c.realtime.middleware_clients = false;
    })
    .await;
    let (_, cookie) = browser_cookies(&s).await;
    let (status, body) = refused(&s, "/v1/realtime", &cookie).await;
    assert_error(status, &body, 401, "middleware_clients off");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_signed_before_a_key_rotation_still_open_sockets() {
    for layout in [CookieLayout::A, CookieLayout::Compact] {
        let old = TestServer::start(EngineKind::Memory, keyed(&[KEY_1], layout)).await;
        let (cid, cookie) = browser_cookies(&old).await;
        old.stop().await;

        // New key first, old key still listed: the old cookie verifies.
        let rotated = TestServer::start(EngineKind::Memory, keyed(&[KEY_2, KEY_1], layout)).await;
        let user = connected_user(&rotated, "deviceId=d", &cookie).await;
        assert_eq!(user, format!("client:{cid}").as_str(), "{layout:?}");
        rotated.stop().await;

        // Old key dropped: it no longer does.
        let new_only = TestServer::start(EngineKind::Memory, keyed(&[KEY_2], layout)).await;
        let (status, body) = refused(&new_only, "/v1/realtime", &cookie).await;
        assert_error(status, &body, 401, "old key removed");
        new_only.stop().await;
    }
}
