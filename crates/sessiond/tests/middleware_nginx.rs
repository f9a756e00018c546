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
mod proxy_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::TestServer;
use nginx_support::{nginx_or_skip, Nginx};
use proxy_support::{free_addr, hang, request, start_upstream, store, Node, API_KEY, SIGNING_KEY};
use serde_json::{json, Value};
use sessiond::config::EngineKind;
use sessiond_middleware::CookieLayout;

const SNIPPET: &str = include_str!("../../../docs/examples/nginx-forward-auth.conf");

/// nginx with the shipped forward-auth recipe in front of `app`, asking `sessiond`.
async fn start_nginx(binary: &Path, sessiond: &str, app: &str) -> Nginx {
    nginx_support::start_nginx(binary, SNIPPET, sessiond, app, API_KEY).await
}

/// One browser request through nginx: (what the upstream saw, the Set-Cookie values).
async fn visit(http: &reqwest::Client, nginx: &Nginx, cookie: &str) -> (Value, Vec<String>) {
    let url = format!("http://{}/page?q=1", nginx.addr);
    let (status, seen, cookies, body) = request(http, &url, cookie, &[]).await;
    assert_eq!(
        status,
        200,
        "nginx answered {status}: {body}\nerror.log: {}",
        nginx.log()
    );
    (seen, cookies)
}

async fn scenario(nginx_bin: &Path, layout: CookieLayout, first_visit_cookies: usize) {
    let server = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![API_KEY.into()];
        c.middleware.signing_keys = vec![SIGNING_KEY.into()];
        c.middleware.cookies.layout = layout;
        c.middleware.session_timeout_ms = 1000;
    })
    .await;
    let upstream = start_upstream().await;
    let nginx = start_nginx(nginx_bin, &server.addr.to_string(), &upstream).await;
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
    let nginx = start_nginx(&nginx_bin, &addr.to_string(), &upstream).await;
    let http = reqwest::Client::new();
    let (seen, set) = visit(&http, &nginx, "").await;
    assert!(!set.is_empty(), "sessiond up: cookies ({seen})");
    assert!(seen["x-session-cid"].is_string(), "{seen}");

    // Stopped: nginx's connection is refused at once.
    node.stop().await;
    served_without_session(&http, &nginx, Duration::from_secs(3)).await;

    // Hung: connections accepted but never answered; nginx gives up after its read timeout.
    let holder = hang(addr).await;
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
