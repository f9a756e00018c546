//! The session middleware over HTTP (`POST /v1/middleware/decide`): both cookie layouts,
//! signing-key rotation, tampering, rehydration, the session timeout, fallback with the engine
//! gone, limits, and analytics tailed from the system stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{assert_error, counter, engines, json, wait_for_counter, TestServer};
use serde_json::{json, Value};
use sessiond::config::{Config, EngineKind};
use sessiond_middleware::CookieLayout;

const KEY_1: &str = "first-signing-key-of-at-least-32-bytes";
const KEY_2: &str = "second-signing-key-of-at-least-32-bytes";

fn with_keys<'a>(keys: &'a [&'a str]) -> impl Fn(&mut Config) + 'a {
    move |c: &mut Config| {
        c.middleware.signing_keys = keys.iter().map(|k| k.to_string()).collect();
    }
}

async fn decide(server: &TestServer, cookie: Option<&str>) -> Value {
    let (status, body) = json(server.post("/v1/middleware/decide").json(&json!({
        "cookie": cookie, "ip": "192.0.2.7", "user_agent": "test-agent/1",
        "accept_language": "en", "url": "https://app.example/page?x=1", "method": "GET"
    })))
    .await;
    assert_eq!(status, 200, "decide: {body}");
    body
}

/// The Cookie header a browser would send back after storing `set_cookies` over `previous`.
fn browser(previous: &str, set_cookies: &Value) -> String {
    let mut jar: Vec<(String, String)> = previous
        .split("; ")
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for set in set_cookies.as_array().unwrap() {
        let pair = set.as_str().unwrap().split(';').next().unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        jar.retain(|(n, _)| n != name);
        jar.push((name.to_string(), value.to_string()));
    }
    jar.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn layout_a_first_visit_return_and_tampering_on_every_engine() {
    for engine in engines() {
        let server = TestServer::start(engine, with_keys(&[KEY_1])).await;
        let first = decide(&server, None).await;
        let s = &first["session"];
        assert_eq!(s["isNewClient"], true, "{engine:?}: {first}");
        assert_eq!(s["isNewSession"], true);
        assert_eq!(s["isNewDoID"], true);
        assert_eq!(s["isNewFpID"], true);
        assert_eq!(s["isFallback"], false);
        assert_eq!(s["cID"], s["eID"]);
        assert_eq!(s["oldState"]["cID"], Value::Null);
        assert_ne!(
            s["doID"], s["cID"],
            "a bootstrap is named by the fingerprint"
        );
        assert_eq!(first["set_cookies"].as_array().unwrap().len(), 8, "{first}");
        let cid = s["cID"].as_str().unwrap().to_string();
        let jar = browser("", &first["set_cookies"]);

        let second = decide(&server, Some(&jar)).await;
        let s2 = &second["session"];
        assert_eq!(s2["cID"], cid.as_str(), "{engine:?}: {second}");
        assert_eq!(s2["sID"], s["sID"]);
        assert_ne!(s2["eID"], s["eID"]);
        assert_eq!(s2["isNewClient"], false);
        assert_eq!(s2["isNewSession"], false);
        assert_eq!(s2["isNewDoID"], false);
        assert_eq!(s2["isNewFpID"], false);
        assert_eq!(s2["doID"], cid.as_str());
        assert_eq!(s2["oldState"]["eID"], s["eID"]);
        let set2 = second["set_cookies"].as_array().unwrap();
        assert_eq!(set2.len(), 2, "only the eID pair changes: {second}");
        assert!(set2.iter().all(|c| c.as_str().unwrap().contains("eID=")));

        // A malformed pair next to valid cookies is skipped, not fatal.
        let noisy = format!("junk=%ff; {jar}");
        assert_eq!(
            decide(&server, Some(&noisy)).await["session"]["cID"],
            cid.as_str()
        );

        // Tampered (one character of the signed cID changed) and unsigned cookies: new client.
        let tampered = jar.replacen(&cid[..4], "AAAA", 2);
        let t = decide(&server, Some(&tampered)).await;
        assert_eq!(t["session"]["isNewClient"], true, "{t}");
        assert_ne!(t["session"]["cID"], cid.as_str());
        let unsigned = format!("_ss_cID={cid}; _ss_sID={cid}");
        let u = decide(&server, Some(&unsigned)).await;
        assert_eq!(u["session"]["isNewClient"], true);
        assert_ne!(u["session"]["cID"], cid.as_str());
        server.stop().await;
    }
}

#[tokio::test]
async fn cookieless_requests_with_one_fingerprint_never_share_a_client() {
    let server = TestServer::start(EngineKind::Memory, with_keys(&[KEY_1])).await;
    let a = decide(&server, None).await;
    let b = decide(&server, None).await;
    assert_eq!(a["session"]["fpID"], b["session"]["fpID"]);
    assert_eq!(a["session"]["doID"], b["session"]["doID"]);
    assert_ne!(a["session"]["cID"], b["session"]["cID"]);
    server.stop().await;
}

#[tokio::test]
async fn compact_layout_session_timeout_and_host_prefix() {
    let server = TestServer::start(EngineKind::Sqlite, |c| {
        with_keys(&[KEY_1])(c);
        c.middleware.cookies.layout = CookieLayout::Compact;
        c.middleware.cookies.host_prefix = true;
        c.middleware.session_timeout_ms = 400;
    })
    .await;
    let first = decide(&server, None).await;
    let set = first["set_cookies"].as_array().unwrap();
    assert_eq!(set.len(), 1, "{first}");
    let cookie = set[0].as_str().unwrap();
    assert!(
        cookie.starts_with("__Host-sessiond=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let jar = browser("", &first["set_cookies"]);
    let second = decide(&server, Some(&jar)).await;
    assert_eq!(second["session"]["sID"], first["session"]["sID"]);
    assert_eq!(
        second["set_cookies"],
        json!([]),
        "nothing changed: no cookie"
    );

    // Idle past the timeout (the behaviour under test): same client, new session.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let third = decide(&server, Some(&jar)).await;
    let s3 = &third["session"];
    assert_eq!(s3["cID"], first["session"]["cID"]);
    assert_eq!(s3["isNewSession"], true, "{third}");
    assert_ne!(s3["sID"], first["session"]["sID"]);
    assert_eq!(s3["sID"], s3["eID"]);
    assert_eq!(third["set_cookies"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn key_rotation_and_rehydration_on_a_server_without_the_state() {
    // Server 1 signs with KEY_1; the memory engine's state dies with it.
    let old = TestServer::start(EngineKind::Memory, with_keys(&[KEY_1])).await;
    let first = decide(&old, None).await;
    let jar = browser("", &first["set_cookies"]);
    let second = decide(&old, Some(&jar)).await;
    let jar = browser(&jar, &second["set_cookies"]);
    old.stop().await;

    // Server 2 signs with KEY_2 and still verifies KEY_1: the state is rehydrated from the
    // cookies in one pass, and the flags describe what the client sent.
    let rotated = TestServer::start(EngineKind::Memory, with_keys(&[KEY_2, KEY_1])).await;
    let before = counter(&rotated, "sessiond_middleware_rehydrations_total").await;
    let r = decide(&rotated, Some(&jar)).await;
    let s = &r["session"];
    assert_eq!(s["cID"], first["session"]["cID"], "{r}");
    assert_eq!(s["sID"], first["session"]["sID"]);
    assert_eq!(s["isNewClient"], false);
    assert_eq!(s["isNewSession"], false);
    assert_eq!(s["oldState"]["eID"], second["session"]["eID"]);
    assert_eq!(s["oldState"]["sID"], first["session"]["sID"]);
    assert!(counter(&rotated, "sessiond_middleware_rehydrations_total").await >= before + 1.0);
    let jar2 = browser(&jar, &r["set_cookies"]);
    rotated.stop().await;

    // Server 3 knows only KEY_2: cookies signed by KEY_1 alone are now void, the ones
    // re-signed by server 2 (the eID pair) are not enough without a valid cID.
    let new_only = TestServer::start(EngineKind::Memory, with_keys(&[KEY_2])).await;
    let n = decide(&new_only, Some(&jar)).await;
    assert_eq!(n["session"]["isNewClient"], true, "{n}");
    assert_ne!(n["session"]["cID"], first["session"]["cID"]);
    let n2 = decide(&new_only, Some(&jar2)).await;
    assert_eq!(
        n2["session"]["isNewClient"], true,
        "eID alone proves nothing: {n2}"
    );
    new_only.stop().await;
}

#[tokio::test]
async fn client_state_expires_after_its_ttl_and_comes_back_from_the_cookie() {
    let server = TestServer::start(EngineKind::Sqlite, |c| {
        with_keys(&[KEY_1])(c);
        c.middleware.client_ttl_s = 1;
    })
    .await;
    let expired = counter(&server, "sessiond_middleware_clients_expired_total").await;
    let rehydrated = counter(&server, "sessiond_middleware_rehydrations_total").await;
    let first = decide(&server, None).await;
    let jar = browser("", &first["set_cookies"]);
    // The client is stored (and its TTL armed) when its cookie first comes back.
    let second = decide(&server, Some(&jar)).await;
    let jar = browser(&jar, &second["set_cookies"]);
    wait_for_counter(
        &server,
        "sessiond_middleware_clients_expired_total",
        expired + 1.0,
        Duration::from_secs(20),
    )
    .await;
    let back = decide(&server, Some(&jar)).await;
    assert_eq!(back["session"]["cID"], first["session"]["cID"], "{back}");
    assert_eq!(back["session"]["isNewClient"], false);
    assert_eq!(back["session"]["oldState"]["eID"], second["session"]["eID"]);
    assert!(counter(&server, "sessiond_middleware_rehydrations_total").await >= rehydrated + 1.0);
    server.stop().await;
}

#[tokio::test]
async fn fallback_when_the_engine_is_gone() {
    let mut server = TestServer::start(EngineKind::Redis, |c| {
        with_keys(&[KEY_1])(c);
        c.middleware.limits.engine_timeout_ms = 500;
    })
    .await;
    let first = decide(&server, None).await;
    assert_eq!(first["session"]["isFallback"], false);
    let jar = browser("", &first["set_cookies"]);
    let before = counter(&server, "sessiond_middleware_fallbacks_total").await;
    server.kill_redis();
    let fb = decide(&server, Some(&jar)).await;
    let s = &fb["session"];
    assert_eq!(s["isFallback"], true, "{fb}");
    assert_eq!(s["isNewClient"], true);
    assert_eq!(s["cID"], s["sID"]);
    assert_ne!(s["cID"], first["session"]["cID"]);
    assert_eq!(
        s["fpID"], first["session"]["fpID"],
        "fallback keeps the request's own fingerprint"
    );
    assert_eq!(fb["set_cookies"], json!([]));
    assert!(counter(&server, "sessiond_middleware_fallbacks_total").await >= before + 1.0);
}

#[tokio::test]
async fn bad_input_limits_and_authentication() {
    let server = TestServer::start(EngineKind::Memory, |c| {
        with_keys(&[KEY_1])(c);
        c.api_keys = vec!["api-key-0123456789".into()];
        c.middleware.limits.max_decisions_per_client_per_s = 2;
        c.middleware.limits.max_field_bytes = 64;
        c.middleware.limits.max_cookie_header_bytes = 1024;
    })
    .await;
    let post = |body: &str| {
        server
            .post("/v1/middleware/decide")
            .bearer_auth("api-key-0123456789")
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let (status, body) = json(
        server
            .post("/v1/middleware/decide")
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert_error(status, &body, 401, "no key");
    let (status, body) = json(post("{not json")).await;
    assert_error(status, &body, 400, "bad json");
    let (status, body) = json(post(r#"{"cookie": 5}"#)).await;
    assert_error(status, &body, 400, "wrong type");
    let long = json!({ "user_agent": "x".repeat(65) }).to_string();
    let (status, body) = json(post(&long)).await;
    assert_error(status, &body, 400, "long field");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("user_agent"));

    let (status, first) = json(post("{}")).await;
    assert_eq!(status, 200);
    let jar = browser("", &first["set_cookies"]);
    // An oversized Cookie header is ignored whole: a new client, not an error.
    let huge = json!({ "cookie": format!("{jar}; pad={}", "p".repeat(2048)) }).to_string();
    let (status, body) = json(post(&huge)).await;
    assert_eq!(status, 200);
    assert_eq!(body["session"]["isNewClient"], true);

    let with_jar = json!({ "cookie": jar }).to_string();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, body) = json(post(&with_jar)).await;
        if status == 429 {
            assert_error(status, &body, 429, "rate");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    server.stop().await;
}

#[tokio::test]
async fn analytics_datasets_can_be_tailed_from_the_system_stream() {
    // The events stream is server-owned: only a service key reads it (docs/security.md).
    const SERVICE: &str = "service-key-0123456789";
    let server = TestServer::start(EngineKind::Sqlite, |c| {
        with_keys(&[KEY_1])(c);
        c.api_keys = vec![SERVICE.into()];
        c.open_routes = vec![sessiond::config::RouteSet::Middleware];
    })
    .await;
    let first = decide(&server, None).await;
    let jar = browser("", &first["set_cookies"]);
    decide(&server, Some(&jar)).await;
    let cid = first["session"]["cID"].as_str().unwrap().to_string();
    let events = "/v1/stream/__sessiond/middleware/events?offset=-1";
    let (status, _) = json(server.get(events)).await;
    assert_eq!(status, 401, "not without the service key");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = json(server.get(events).bearer_auth(SERVICE)).await;
        let mine: Vec<&Value> = body
            .as_array()
            .map(|a| a.iter().filter(|p| p["cID"] == cid.as_str()).collect())
            .unwrap_or_default();
        let datasets: Vec<&str> = mine
            .iter()
            .map(|p| p["dataset"].as_str().unwrap())
            .collect();
        if datasets.iter().filter(|d| **d == "events").count() == 2 {
            assert_eq!(status, 200);
            assert!(
                datasets.contains(&"sessions") && datasets.contains(&"clients"),
                "{datasets:?}"
            );
            let event = mine.iter().find(|p| p["dataset"] == "events").unwrap();
            assert_eq!(event["host"], "app.example");
            assert_eq!(event["path"], "/page");
            assert_eq!(event["method"], "GET");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "analytics never arrived: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
