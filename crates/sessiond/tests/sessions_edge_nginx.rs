//! Account sessions at the edge, end to end through a real nginx running the recipe shipped in
//! `docs/examples/nginx-account-sessions.conf` (placeholders replaced; the step-up location's
//! `_300` is shortened to `_2` so the test need not wait five minutes), in front of a small
//! app that echoes the `X-Sessiond-*` headers it receives and counts its requests.
//!
//! What must hold: a live session's cookie reaches the app with sessiond's user id; a
//! browser's own `X-Sessiond-*` headers never do; no, unknown or revoked cookies are denied
//! (a revoke takes effect on the very next request), pages with the login redirect and APIs
//! with a 401; a login older than the step-up location's max age is a 401 with RFC 9470's
//! challenge until a reauth; and with sessiond stopped or hung, requests are denied, never
//! passed to the app.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nginx_support;
mod proxy_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use common::TestServer;
use nginx_support::{nginx_or_skip, start_nginx, Nginx};
use proxy_support::rebind;
use serde_json::{json, Value};
use sessiond::config::EngineKind;

const API_KEY: &str = "nginx-edge-test-key-0123456789";
const RECIPE: &str = include_str!("../../../docs/examples/nginx-account-sessions.conf");

/// The app: echoes the `X-Sessiond-*` headers it got; counts requests.
async fn start_app() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let echo = move |headers: HeaderMap| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let seen: serde_json::Map<String, Value> = headers
                .iter()
                .filter(|(name, _)| name.as_str().starts_with("x-sessiond-"))
                .map(|(name, v)| (name.to_string(), json!(v.to_str().unwrap_or(""))))
                .collect();
            axum::Json(Value::Object(seen))
        }
    };
    let app = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    fn new(nginx: &Nginx) -> Browser {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser {
            http,
            base: format!("http://{}", nginx.addr),
        }
    }

    /// GET `path` with the session cookie (if any) and a spoofed identity header.
    async fn get(&self, path: &str, session: Option<&str>) -> (u16, HeaderMap, String) {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-sessiond-user-id", "mallory")
            .header("x-sessiond-auth-time", "99999999999999")
            .header("x-sessiond-max-age", "999999");
        if let Some(id) = session {
            req = req.header("cookie", format!("theme=dark; sessiond_session={id}"));
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.text().await.unwrap())
    }
}

async fn create_session(s: &TestServer, user: &str) -> String {
    let res = s
        .post("/v1/sessions")
        .bearer_auth(API_KEY)
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_lets_only_live_account_sessions_through_and_fails_closed() {
    let Some(nginx_bin) = nginx_or_skip() else {
        return;
    };
    let server = TestServer::start(EngineKind::Sqlite, |c| c.api_keys = vec![API_KEY.into()]).await;
    let (app, hits) = start_app().await;
    assert!(RECIPE.contains("auth_request /_sessiond_account_300;"));
    let recipe = RECIPE.replace("/_sessiond_account_300;", "/_sessiond_account_2;");
    let sessiond_addr = server.addr;
    let nginx = start_nginx(
        &nginx_bin,
        &recipe,
        &sessiond_addr.to_string(),
        &app,
        API_KEY,
    )
    .await;
    let browser = Browser::new(&nginx);
    let log = || nginx.log();

    // A live session: the app sees sessiond's identity, not the browser's spoofed one.
    let id = create_session(&server, "ada").await;
    let (status, _, body) = browser.get("/api/me", Some(&id)).await;
    assert_eq!(status, 200, "{body}\n{}", log());
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["x-sessiond-user-id"], "ada", "{seen}");
    assert_eq!(seen["x-sessiond-session-id"], id.as_str(), "{seen}");
    assert_ne!(seen["x-sessiond-auth-time"], "99999999999999", "{seen}");
    assert!(seen.get("x-sessiond-max-age").is_none(), "{seen}");
    let (status, _, _) = browser.get("/", Some(&id)).await;
    assert_eq!(status, 200);

    // No or unknown cookie: an API gets 401, a page the login redirect; the app sees nothing.
    let before = hits.load(Ordering::SeqCst);
    for session in [None, Some("not-a-session")] {
        let (status, _, body) = browser.get("/api/me", session).await;
        assert_eq!(status, 401, "{session:?}: {body}");
        let (status, headers, _) = browser.get("/", session).await;
        assert_eq!(status, 302, "{session:?}");
        let location = headers["location"].to_str().unwrap();
        assert!(location.ends_with("/login"), "{location}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "denied requests reach no app"
    );
    let (status, _, body) = browser.get("/login", None).await;
    assert_eq!(status, 200, "the login page is public");
    assert_eq!(body, "{}", "a public page gets no identity, spoofed or not");

    // Step-up: once the login is older than the location's max age, 401 with the challenge;
    // a reauth lets the user through again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let challenge = loop {
        let (status, headers, body) = browser.get("/account/security/keys", Some(&id)).await;
        if status == 401 {
            break headers;
        }
        assert_eq!(status, 200, "{body}\n{}", log());
        assert!(tokio::time::Instant::now() < deadline, "never too old");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        challenge["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\", max_age=2"
    );
    assert_eq!(
        browser.get("/api/me", Some(&id)).await.0,
        200,
        "others pass"
    );
    let res = server
        .post(&format!("/v1/sessions/{id}/reauth"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, _, body) = browser.get("/account/security/keys", Some(&id)).await;
    assert_eq!(status, 200, "after reauth: {body}");

    // Revoke: the very next request is denied.
    let res = server
        .delete(&format!("/v1/sessions/{id}"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(browser.get("/api/me", Some(&id)).await.0, 401);

    // sessiond stopped, then hung: denied (never passed through), within the timeouts.
    let id = create_session(&server, "ada").await;
    assert_eq!(browser.get("/api/me", Some(&id)).await.0, 200);
    server.stop().await;
    let before = hits.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    let (status, _, _) = browser.get("/api/me", Some(&id)).await;
    assert!(status >= 500, "sessiond down: denied, got {status}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let hung = rebind(sessiond_addr).await;
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let (status, _, _) = browser.get("/api/me", Some(&id)).await;
    assert!(status >= 500, "sessiond hung: denied, got {status}");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(hits.load(Ordering::SeqCst), before, "the app saw nothing");
    holder.abort();
    drop(nginx);
}
