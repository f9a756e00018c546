//! The session middleware against hostile clients, over a real server: cookieless first
//! visits cost no storage, stale / page-readable / recombined cookies prove nothing (to a
//! decision or a realtime socket), and one bad `X-Forwarded-For` hop is skipped alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use std::path::Path;

use common::{assert_error, counter, json, TestServer};
use realtime_support::connect;
use serde_json::{json, Value};
use sessiond::config::{Config, EngineKind};
use sessiond_middleware::cookies::{CookieCodec, Issue, Presented};
use sessiond_middleware::signing::Signer;
use sessiond_middleware::AnalyticsTarget;
use sessiond_middleware::MiddlewareConfig;

const KEY: &str = "middleware-signing-key-of-at-least-32-bytes";
const API_KEY: &str = "middleware-security-test-api-key";

fn keyed(c: &mut Config) {
    c.api_keys = vec![API_KEY.into()];
    c.middleware.signing_keys = vec![KEY.into()];
}

async fn decide(s: &TestServer, cookie: Option<&str>) -> Value {
    let (status, body) = json(
        s.post("/v1/middleware/decide")
            .bearer_auth(API_KEY)
            .json(&json!({ "cookie": cookie, "ip": "192.0.2.7", "user_agent": "ua/1" })),
    )
    .await;
    assert_eq!(status, 200, "decide: {body}");
    body
}

/// The Cookie header a browser sends after storing `set_cookies`.
fn jar(set_cookies: &Value) -> String {
    set_cookies
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// 100k in the issue; 20,000 here to keep the debug-build suite quick. The assertion is per
/// visit: under 10 bytes each (the old code stored ~2.3 KiB and a TTL alarm per visit).
const FIRST_VISITS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookieless_first_visits_store_nothing_until_the_cookie_returns() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let dir = data_dir.clone();
    let s = TestServer::start(EngineKind::Sqlite, move |c| {
        keyed(c);
        c.data_dir = dir;
        c.middleware.analytics.sink = AnalyticsTarget::Off;
    })
    .await;
    // Warm up (schema, WAL) before measuring.
    let first = decide(&s, None).await;
    let before = dir_bytes(&data_dir);
    let per_task = FIRST_VISITS / 8;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let http = s.http.clone();
            let url = s.url("/v1/middleware/decide");
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let res = http
                        .post(&url)
                        .bearer_auth(API_KEY)
                        .json(&json!({ "ip": "198.51.100.1", "user_agent": "bot" }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let grown = dir_bytes(&data_dir).saturating_sub(before);
    let per_visit = grown as f64 / (per_task * 8) as f64;
    assert!(
        per_visit < 10.0,
        "{FIRST_VISITS} cookieless visits grew the data dir by {grown} bytes ({per_visit:.1} per visit)"
    );

    // The first return is an ordinary decision from the cookies (not a rehydration), and
    // from then on the client is stored: the next request continues its session.
    let rehydrations = counter(&s, "sessiond_middleware_rehydrations_total").await;
    let cookie = jar(&first["set_cookies"]);
    let back = decide(&s, Some(&cookie)).await;
    assert_eq!(back["session"]["cID"], first["session"]["cID"], "{back}");
    assert_eq!(back["session"]["isNewClient"], false);
    assert_eq!(back["session"]["isNewSession"], false);
    assert_eq!(back["session"]["oldState"]["eID"], first["session"]["eID"]);
    assert_eq!(
        counter(&s, "sessiond_middleware_rehydrations_total").await,
        rehydrations
    );
    let again = decide(&s, Some(&cookie)).await;
    assert_eq!(
        again["session"]["oldState"]["eID"], back["session"]["eID"],
        "the stored state, not the cookie, answered: {again}"
    );
    s.stop().await;
}

/// Layout-A cookies for a client first seen at `at` (unix ms), signed with `KEY`.
fn cookies_issued_at(at: i64) -> (String, String) {
    let config = MiddlewareConfig::default();
    let codec = CookieCodec::new(config.cookies, Signer::new(&[KEY]), 30 * 60 * 1000);
    let cid = sessiond_middleware::ids::new_id(at);
    let issue = Issue {
        cid: &cid,
        sid: &cid,
        eid: &cid,
        fpid: None,
    };
    let set = codec.set_cookies(&Presented::default(), &issue, at);
    (cid, jar(&json!(set)))
}

fn origin(s: &TestServer) -> String {
    format!("http://{}", s.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_page_readable_and_recombined_cookies_prove_nothing() {
    let s = TestServer::start(EngineKind::Memory, keyed).await;
    let origin = origin(&s);
    let socket_user = |cookie: String| {
        let s = &s;
        let origin = origin.clone();
        async move {
            let headers = [("cookie", cookie.as_str()), ("origin", origin.as_str())];
            match connect(s, "/v1/realtime?deviceId=d", &headers).await {
                realtime_support::Connect::Open(mut ws) => {
                    let hello = ws.expect("connected").await;
                    ws.close().await;
                    Ok(hello["userId"].clone())
                }
                realtime_support::Connect::Refused(status, body) => Err((status, body)),
            }
        }
    };

    // A cookie signed with the right key three years ago (past its one-year lifetime).
    let three_years = 3 * 365 * 24 * 3600 * 1000;
    let (old_cid, old) = cookies_issued_at(sessiond_store::now_ms() - three_years);
    let d = decide(&s, Some(&old)).await;
    assert_eq!(d["session"]["isNewClient"], true, "{d}");
    assert_ne!(d["session"]["cID"], old_cid.as_str());
    let (status, body) = socket_user(old.clone()).await.unwrap_err();
    assert_error(status, &body, 401, "stale cookie as a socket credential");

    // A fresh browser: the HttpOnly copy opens a socket, the page-readable copy alone not.
    let first = decide(&s, None).await;
    let cid = first["session"]["cID"].as_str().unwrap().to_string();
    let cookie = jar(&first["set_cookies"]);
    let user = socket_user(cookie.clone()).await.unwrap();
    assert_eq!(user, format!("client:{cid}").as_str());
    let readable: String = cookie
        .split("; ")
        .filter(|p| p.starts_with("_cs_"))
        .collect::<Vec<_>>()
        .join("; ");
    let (status, body) = socket_user(readable).await.unwrap_err();
    assert_error(status, &body, 401, "_cs_ copy as a socket credential");

    // Browser A's cID with browser B's sID and eID: A stays A, B's session does not follow.
    let b = decide(&s, None).await;
    let b_cookie = jar(&b["set_cookies"]);
    let a_cid: Vec<&str> = cookie.split("; ").filter(|p| p.contains("cID=")).collect();
    let b_rest: Vec<&str> = b_cookie
        .split("; ")
        .filter(|p| !p.contains("cID="))
        .collect();
    let mixed = [a_cid, b_rest].concat().join("; ");
    let m = decide(&s, Some(&mixed)).await;
    assert_eq!(m["session"]["cID"], cid.as_str(), "{m}");
    assert_ne!(m["session"]["sID"], b["session"]["sID"]);
    assert_eq!(m["session"]["oldState"]["sID"], Value::Null);
    s.stop().await;
}

#[tokio::test]
async fn one_bad_forwarded_for_hop_is_skipped_alone() {
    let s = TestServer::start(EngineKind::Memory, keyed).await;
    let fp = |xff: Option<&'static str>| {
        let mut req = s
            .get("/v1/middleware/forward-auth")
            .bearer_auth(API_KEY)
            .header("user-agent", "ua/1");
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.headers()["x-session-fpid"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    let client = fp(Some("203.0.113.9")).await;
    let peer = fp(None).await;
    assert_ne!(client, peer);
    assert_eq!(fp(Some("203.0.113.9, unknown")).await, client);
    assert_eq!(fp(Some("unknown, 203.0.113.9")).await, client);
    assert_eq!(fp(Some("garbage")).await, peer);
    s.stop().await;
}
