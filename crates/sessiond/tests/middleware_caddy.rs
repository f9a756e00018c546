//! End to end through a real Caddy: its forward-auth (a `reverse_proxy` to sessiond's
//! `/v1/middleware/forward-auth` with `handle_response`) in front of a small upstream that
//! echoes the `X-Session-*` headers it receives. The Caddyfile is the ```caddyfile block of
//! `docs/middleware.md`, read from the doc at build time, so the documented snippet is what
//! is tested.
//!
//! Caddy comes from Debian's `caddy` package (`./scripts/test` installs it and sets
//! `REQUIRE_CADDY=1`, so CI never skips); without Caddy and without that variable the test
//! says it skips.
//!
//! Like the nginx recipe it fails open: with sessiond stopped, or accepting connections but
//! never answering, Caddy still serves the page, without session headers or cookies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod proxy_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestServer;
use proxy_support::{
    binary_or_skip, free_addr, hang, request, start_proxy, start_upstream, store, Node, Proxy,
    API_KEY, SIGNING_KEY,
};
use serde_json::{json, Value};
use sessiond::config::EngineKind;
use sessiond_middleware::CookieLayout;

const DOC: &str = include_str!("../../../docs/middleware.md");

/// The one ```caddyfile block of docs/middleware.md.
fn snippet() -> &'static str {
    let start = DOC
        .find("```caddyfile\n")
        .expect("a caddyfile block in the doc")
        + 13;
    let len = DOC[start..].find("```").expect("the block ends");
    let block = &DOC[start..start + len];
    assert_eq!(
        DOC.matches("```caddyfile").count(),
        1,
        "one caddyfile block, the tested one"
    );
    block
}

/// A private Caddy in a temp dir (no admin endpoint, no HTTPS; its log is
/// [`Proxy::log`]), killed on drop.
type Caddy = Proxy;

async fn start_caddy(binary: &Path, sessiond: &str, app: &str) -> Caddy {
    start_proxy(
        "caddy",
        "caddy.log",
        Duration::from_secs(15),
        |dir, addr| {
            let site = snippet()
                .replace("app.example.com", &format!("http://{addr}"))
                .replace("127.0.0.1:7700", sessiond)
                .replace("127.0.0.1:3000", app);
            // Global options only: no admin endpoint (its fixed port would collide), no HTTPS.
            let conf = format!("{{\n\tadmin off\n\tauto_https off\n}}\n{site}");
            let conf_path = dir.join("Caddyfile");
            std::fs::write(&conf_path, conf).unwrap();
            let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
            let mut command = Command::new(binary);
            command
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&conf_path)
                .env("HOME", dir)
                .env("XDG_CONFIG_HOME", dir)
                .env("XDG_DATA_HOME", dir)
                .env("SESSIOND_API_KEY", API_KEY)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            command
        },
    )
    .await
}

/// One browser request through Caddy: (what the upstream saw, the Set-Cookie values).
async fn visit(
    http: &reqwest::Client,
    caddy: &Caddy,
    cookie: &str,
    headers: &[(&str, &str)],
) -> (Value, Vec<String>) {
    let url = format!("http://{}/page?q=1", caddy.addr);
    let (status, seen, cookies, body) = request(http, &url, cookie, headers).await;
    assert_eq!(
        status,
        200,
        "caddy answered {status}: {body}\ncaddy log: {}",
        caddy.log()
    );
    // An absent cookie header must not reach the browser as the literal placeholder.
    assert!(
        cookies.iter().all(|c| !c.contains('{')),
        "placeholder sent as a cookie: {cookies:?}"
    );
    (seen, cookies)
}

fn caddy_or_skip() -> Option<std::path::PathBuf> {
    binary_or_skip("caddy", &["/usr/bin", "/usr/local/bin"], "REQUIRE_CADDY")
}

#[tokio::test]
async fn caddy_forward_auth_in_front_of_an_app() {
    let Some(caddy_bin) = caddy_or_skip() else {
        return;
    };
    let server = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![API_KEY.into()];
        c.middleware.signing_keys = vec![SIGNING_KEY.into()];
        c.middleware.cookies.layout = CookieLayout::Compact;
    })
    .await;
    let upstream = start_upstream().await;
    let caddy = start_caddy(&caddy_bin, &server.addr.to_string(), &upstream).await;
    let http = reqwest::Client::new();

    // First visit: the cookie is set, the upstream sees the new client's ids.
    let (seen, set) = visit(&http, &caddy, "", &[]).await;
    assert_eq!(set.len(), 1, "{set:?}");
    let cid = seen["x-session-cid"].as_str().unwrap().to_string();
    let sid = seen["x-session-sid"].as_str().unwrap().to_string();
    assert_eq!(cid.len(), 30, "{seen}");
    assert_eq!(seen["x-session-new"], "client,session");
    assert_eq!(seen["x-session-fallback"], "0");
    let jar = store("", &set);

    // Next request: same client and session, a new event. The client's own X-Session-*
    // headers are dropped before the app sees anything.
    let forged = [("x-session-cid", "forged"), ("x-session-user", "admin")];
    let (seen2, set2) = visit(&http, &caddy, &jar, &forged).await;
    assert_eq!(seen2["x-session-cid"], cid.as_str(), "{seen2}");
    assert_eq!(seen2["x-session-sid"], sid.as_str());
    assert_ne!(seen2["x-session-eid"], seen["x-session-eid"]);
    assert_eq!(seen2["x-session-new"], "none");
    assert!(seen2.get("x-session-user").is_none(), "{seen2}");
    let jar = store(&jar, &set2);

    // A tampered cookie is not trusted: a new client.
    let tampered = jar.replace(&cid[20..], "AAAAAAAAAA");
    assert_ne!(tampered, jar);
    let (seen3, set3) = visit(&http, &caddy, &tampered, &[]).await;
    assert_ne!(seen3["x-session-cid"], cid.as_str(), "{seen3}");
    assert_eq!(seen3["x-session-new"], "client,session");
    assert_eq!(set3.len(), 1, "{set3:?}");

    // A wrong key is a configuration error: Caddy passes sessiond's 401 on, not the page.
    drop(caddy);
    let wrong = TestServer::start(EngineKind::Memory, |c| {
        c.api_keys = vec!["another-key-0123456789abcdef".into()];
        c.middleware.signing_keys = vec![SIGNING_KEY.into()];
    })
    .await;
    let caddy = start_caddy(&caddy_bin, &wrong.addr.to_string(), &upstream).await;
    let url = format!("http://{}/page", caddy.addr);
    let (status, seen, _, _) = request(&http, &url, "", &[]).await;
    assert_eq!(status, 401, "{seen}");
    drop(caddy);
    wrong.stop().await;
    server.stop().await;
}

/// A page served while sessiond cannot decide: 200, no cookie, no session header (a forged
/// one included), in time.
async fn served_without_session(http: &reqwest::Client, caddy: &Caddy, within: Duration) {
    let started = std::time::Instant::now();
    let (seen, set) = visit(http, caddy, "", &[("x-session-cid", "forged")]).await;
    assert!(set.is_empty(), "no cookie without sessiond: {set:?}");
    assert_eq!(seen, json!({}), "the app saw no X-Session-* header");
    assert!(
        started.elapsed() < within,
        "the page took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn caddy_serves_the_page_while_sessiond_is_down() {
    let Some(caddy_bin) = caddy_or_skip() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let addr: SocketAddr = free_addr().parse().unwrap();
    let node = Node::start(addr, data.path()).await;
    let upstream = start_upstream().await;
    let caddy = start_caddy(&caddy_bin, &addr.to_string(), &upstream).await;
    let http = reqwest::Client::new();
    let (seen, set) = visit(&http, &caddy, "", &[]).await;
    assert!(!set.is_empty(), "sessiond up: cookies ({seen})");
    assert!(seen["x-session-cid"].is_string(), "{seen}");

    // Stopped: Caddy's dial is refused at once.
    node.stop().await;
    served_without_session(&http, &caddy, Duration::from_secs(3)).await;

    // Hung: connections accepted but never answered; Caddy gives up after its header timeout.
    let holder = hang(addr).await;
    served_without_session(&http, &caddy, Duration::from_secs(6)).await;
    holder.abort();
    let _ = holder.await;

    // Back: cookies again, on the same address.
    let node = Node::start(addr, data.path()).await;
    let (seen, set) = visit(&http, &caddy, "", &[]).await;
    assert!(!set.is_empty(), "sessiond back: cookies again ({seen})");
    assert!(seen["x-session-cid"].is_string(), "{seen}");
    drop(caddy);
    node.stop().await;
}
