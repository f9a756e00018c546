//! End to end through a real nginx: `auth_request` to sessiond's forward-auth in front of a
//! small upstream that echoes the `X-Session-*` headers it receives. The nginx configuration
//! is the one shipped in `docs/examples/nginx-forward-auth.conf`, so the documented snippet is
//! what is tested.
//!
//! nginx comes from Debian's `nginx` package (`./scripts/test` installs it and sets
//! `REQUIRE_NGINX=1`, so CI never skips); without nginx and without that variable
//! the test says it skips.
//!
//! The recipe fails open: with sessiond stopped, or accepting connections but never
//! answering, nginx still serves the page, without session headers or cookies; once sessiond
//! is back, cookies are set again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nginx_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::http::HeaderMap;
use common::TestServer;
use nginx_support::{free_addr, nginx_or_skip, rebind, start_nginx, Nginx};
use serde_json::{json, Value};
use sessiond::config::{Config, EngineKind};
use sessiond_middleware::CookieLayout;

const API_KEY: &str = "nginx-test-key-0123456789";
const SNIPPET: &str = include_str!("../../../docs/examples/nginx-forward-auth.conf");

/// The upstream: answers every request with the `X-Session-*` headers it received.
async fn start_upstream() -> String {
    let echo = |headers: HeaderMap| async move {
        let seen: serde_json::Map<String, Value> = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-session-"))
            .map(|(name, v)| (name.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        axum::Json(Value::Object(seen))
    };
    let app = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// One browser request through nginx: (what the upstream saw, the Set-Cookie values).
async fn visit(http: &reqwest::Client, nginx: &Nginx, cookie: &str) -> (Value, Vec<String>) {
    let mut req = http.get(format!("http://{}/page?q=1", nginx.addr));
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let body = res.text().await.unwrap();
    let log = std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default();
    assert_eq!(
        status, 200,
        "nginx answered {status}: {body}\nerror.log: {log}"
    );
    (serde_json::from_str(&body).unwrap(), cookies)
}

/// The browser's cookie jar after storing `set` over `jar`.
fn store(jar: &str, set: &[String]) -> String {
    let mut pairs: Vec<(String, String)> = jar
        .split("; ")
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| (n.into(), v.into()))
        .collect();
    for s in set {
        let (n, v) = s.split(';').next().unwrap().split_once('=').unwrap();
        pairs.retain(|(name, _)| name != n);
        pairs.push((n.into(), v.into()));
    }
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn scenario(nginx_bin: &Path, layout: CookieLayout, first_visit_cookies: usize) {
    let server = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![API_KEY.into()];
        c.middleware.signing_keys = vec!["nginx-test-signing-key-of-32-bytes-or-more".into()];
        c.middleware.cookies.layout = layout;
        c.middleware.session_timeout_ms = 1000;
    })
    .await;
    let upstream = start_upstream().await;
    let nginx = start_nginx(
        nginx_bin,
        SNIPPET,
        &server.addr.to_string(),
        &upstream,
        API_KEY,
    )
    .await;
    let http = reqwest::Client::new();

    // First visit: cookies set, the upstream sees the new client's ids.
    let (seen, set) = visit(&http, &nginx, "").await;
    assert_eq!(set.len(), first_visit_cookies, "{layout:?}: {set:?}");
    let cid = seen["x-session-cid"].as_str().unwrap().to_string();
    let sid = seen["x-session-sid"].as_str().unwrap().to_string();
    assert_eq!(cid.len(), 30, "{seen}");
    assert_eq!(seen["x-session-new"], "client,session");
    assert_eq!(seen["x-session-fallback"], "0");
    let jar = store("", &set);

    // Next request: same client and session, a new event.
    let (seen2, set2) = visit(&http, &nginx, &jar).await;
    assert_eq!(seen2["x-session-cid"], cid.as_str(), "{seen2}");
    assert_eq!(seen2["x-session-sid"], sid.as_str());
    assert_ne!(seen2["x-session-eid"], seen["x-session-eid"]);
    assert_eq!(seen2["x-session-new"], "none");
    let jar = store(&jar, &set2);

    // After the session timeout (the behaviour under test): same client, new session.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (seen3, set3) = visit(&http, &nginx, &jar).await;
    assert_eq!(seen3["x-session-cid"], cid.as_str(), "{seen3}");
    assert_ne!(seen3["x-session-sid"], sid.as_str());
    assert_eq!(seen3["x-session-new"], "session");
    assert!(!set3.is_empty(), "the new sID is stored");

    // A tampered cookie is not trusted: a new client. (Layout A's JS copy is signed too and
    // would stand in for a tampered HttpOnly copy, so every copy is altered.)
    let tampered = jar.replace(&cid[20..], "AAAAAAAAAA");
    assert_ne!(tampered, jar);
    let (seen4, _) = visit(&http, &nginx, &tampered).await;
    assert_ne!(seen4["x-session-cid"], cid.as_str(), "{seen4}");
    assert_eq!(seen4["x-session-new"], "client,session");
    drop(nginx);
    server.stop().await;
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_an_app() {
    let Some(nginx) = nginx_or_skip() else {
        return;
    };
    scenario(&nginx, CookieLayout::Compact, 1).await;
    scenario(&nginx, CookieLayout::A, 8).await;
}

/// sessiond on a fixed address (so nginx's upstream stays valid across a restart).
struct Node {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    async fn start(addr: SocketAddr, data_dir: &Path) -> Node {
        let mut config = Config {
            engine: EngineKind::Sqlite,
            data_dir: data_dir.to_path_buf(),
            listen: addr,
            api_keys: vec![API_KEY.into()],
            ..Config::default()
        };
        config.middleware.signing_keys = vec!["nginx-test-signing-key-of-32-bytes-or-more".into()];
        config.validate().unwrap();
        let listener = rebind(addr).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sessiond::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Node { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A page served while sessiond cannot decide: 200, no cookie, no session header, in time.
async fn served_without_session(http: &reqwest::Client, nginx: &Nginx, within: Duration) {
    let started = std::time::Instant::now();
    let (seen, set) = visit(http, nginx, "").await;
    assert!(set.is_empty(), "no cookie without sessiond: {set:?}");
    assert_eq!(seen, json!({}), "the app saw no X-Session-* header");
    assert!(
        started.elapsed() < within,
        "the page took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_page_is_served_while_sessiond_is_down() {
    let Some(nginx_bin) = nginx_or_skip() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let addr: SocketAddr = free_addr().parse().unwrap();
    let node = Node::start(addr, data.path()).await;
    let upstream = start_upstream().await;
    let nginx = start_nginx(&nginx_bin, SNIPPET, &addr.to_string(), &upstream, API_KEY).await;
    let http = reqwest::Client::new();
    let (seen, set) = visit(&http, &nginx, "").await;
    assert!(!set.is_empty(), "sessiond up: cookies ({seen})");
    assert!(seen["x-session-cid"].is_string(), "{seen}");

    // Stopped: nginx's connection is refused at once.
    node.stop().await;
    served_without_session(&http, &nginx, Duration::from_secs(3)).await;

    // Hung: connections accepted but never answered; nginx gives up after its read timeout.
    let hung = rebind(addr).await;
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    served_without_session(&http, &nginx, Duration::from_secs(6)).await;
    holder.abort();
    let _ = holder.await;

    // Back: cookies again, on the same address.
    let node = Node::start(addr, data.path()).await;
    let (seen, set) = visit(&http, &nginx, "").await;
    assert!(!set.is_empty(), "sessiond back: cookies again ({seen})");
    assert!(seen["x-session-cid"].is_string(), "{seen}");
    drop(nginx);
    node.stop().await;
}
