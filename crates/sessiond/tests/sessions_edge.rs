//! The edge check `GET /v1/sessions/forward-auth` and `POST /v1/sessions/{id}/reauth`, through
//! a real listener on every engine: 200 with the identity headers for a live keyed session
//! named by a `sessions.cookies` cookie, 401 for everything else (no cookie, unknown, revoked,
//! rotated away, open-route, no user), freshness by `X-Sessiond-Max-Age` (401 with RFC 9470's
//! challenge; a reauth makes it pass), a malformed Max-Age is a 400, a pass slides the
//! session without a write per request, and the routes need a full key whatever
//! `open_routes` says. The nginx recipe is tested in `sessions_edge_nginx.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{assert_error, engines, json, TestServer};
use serde_json::{json, Value};
use sessiond::config::{EngineKind, RouteSet};

const KEY: &str = "service-key-for-the-edge-test";
const CHECK: &str = "/v1/sessions/forward-auth";

async fn create(s: &TestServer, body: Value) -> Value {
    let (status, created) = json(s.post("/v1/sessions").bearer_auth(KEY).json(&body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// One check as a proxy sends it: the browser's cookies, the proxy's key.
async fn check(s: &TestServer, cookie: Option<&str>, max_age: Option<&str>) -> reqwest::Response {
    let mut req = s.get(CHECK).bearer_auth(KEY);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    if let Some(max_age) = max_age {
        req = req.header("x-sessiond-max-age", max_age);
    }
    req.send().await.unwrap()
}

async fn status_of(s: &TestServer, cookie: &str) -> u16 {
    check(s, Some(cookie), None).await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_check_passes_only_live_keyed_sessions() {
    for engine in engines() {
        let s = TestServer::start(engine, |c| {
            c.api_keys = vec![KEY.into()];
            c.open_routes = vec![RouteSet::Sessions];
            c.sessions.cookies = Some(vec!["app_sid".into(), "sessiond_session".into()]);
        })
        .await;
        let ctx = format!("{engine:?}");
        let created = create(&s, json!({"user_id": "ada"})).await;
        let id = created["id"].as_str().unwrap().to_string();
        let auth_time = created["auth_time"].as_i64().unwrap();
        assert_eq!(auth_time, created["created_at"].as_i64().unwrap(), "{ctx}");

        // Any listed cookie, among others, quoted or not.
        for cookie in [
            format!("theme=dark; app_sid={id}"),
            format!("sessiond_session=\"{id}\""),
        ] {
            let res = check(&s, Some(&cookie), None).await;
            assert_eq!(res.status(), 200, "{ctx}: {cookie}");
            let h = res.headers();
            assert_eq!(h["x-sessiond-user-id"], "ada", "{ctx}");
            assert_eq!(h["x-sessiond-session-id"], id.as_str(), "{ctx}");
            assert_eq!(h["x-sessiond-auth-time"], auth_time.to_string().as_str());
        }

        // 401, and nothing more, for everything else.
        let (status, body) = json(s.get(CHECK).bearer_auth(KEY)).await;
        assert_error(status, &body, 401, &format!("{ctx}: no cookie"));
        assert_eq!(status_of(&s, "other=1").await, 401, "{ctx}: other cookie");
        assert_eq!(status_of(&s, "app_sid=unknown").await, 401, "{ctx}");
        let long = format!("app_sid={}", "x".repeat(4000));
        assert_eq!(status_of(&s, &long).await, 401, "{ctx}: overlong id");
        let anonymous = create(&s, json!({})).await;
        let cookie = format!("app_sid={}", anonymous["id"].as_str().unwrap());
        assert_eq!(status_of(&s, &cookie).await, 401, "{ctx}: no user");
        let (status, open) = json(s.post("/v1/sessions").json(&json!({"user_id": "ada"}))).await;
        assert_eq!((status, &open["origin"]), (201, &json!("open_route")));
        let cookie = format!("app_sid={}", open["id"].as_str().unwrap());
        assert_eq!(
            status_of(&s, &cookie).await,
            401,
            "{ctx}: open-route session"
        );

        // Rotated away: the old id fails, the new one passes, auth_time is kept.
        let (status, rotated) = json(
            s.post(&format!("/v1/sessions/{id}/rotate"))
                .bearer_auth(KEY),
        )
        .await;
        assert_eq!(status, 200, "{ctx}: {rotated}");
        assert_eq!(
            rotated["auth_time"], auth_time,
            "{ctx}: rotation keeps auth_time"
        );
        let new_id = rotated["id"].as_str().unwrap().to_string();
        assert_eq!(status_of(&s, &format!("app_sid={id}")).await, 401, "{ctx}");
        assert_eq!(status_of(&s, &format!("app_sid={new_id}")).await, 200);

        // Revoked: the very next check fails.
        let res = s
            .delete(&format!("/v1/sessions/{new_id}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{ctx}");
        assert_eq!(status_of(&s, &format!("app_sid={new_id}")).await, 401);

        // The check and reauth need the full key even though the sessions set is open.
        let (status, body) = json(s.get(CHECK).header("cookie", format!("app_sid={id}"))).await;
        assert_error(status, &body, 401, &format!("{ctx}: check without a key"));
        let (status, body) = json(s.post(&format!("/v1/sessions/{id}/reauth"))).await;
        assert_error(status, &body, 401, &format!("{ctx}: reauth without a key"));
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_demands_a_recent_authentication_and_reauth_gives_it() {
    for engine in engines() {
        let s = TestServer::start(engine, |c| c.api_keys = vec![KEY.into()]).await;
        let ctx = format!("{engine:?}");
        let created = create(&s, json!({"user_id": "ada"})).await;
        let id = created["id"].as_str().unwrap().to_string();
        let cookie = format!("sessiond_session={id}");

        for bad in ["", "-1", "1.5", "ten", "99999999999", "1 2"] {
            let (status, body) = json(
                s.get(CHECK)
                    .bearer_auth(KEY)
                    .header("cookie", &cookie)
                    .header("x-sessiond-max-age", bad),
            )
            .await;
            assert_error(status, &body, 400, &format!("{ctx}: Max-Age {bad:?}"));
        }
        let fresh = check(&s, Some(&cookie), Some("3600")).await;
        assert_eq!(fresh.status(), 200, "{ctx}");

        // Once the login is more than a second old, a one-second location refuses it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let refused = loop {
            let res = check(&s, Some(&cookie), Some("1")).await;
            if res.status() == 401 {
                break res;
            }
            assert_eq!(res.status(), 200, "{ctx}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{ctx}: never too old"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            refused.headers()["www-authenticate"],
            "Bearer error=\"insufficient_user_authentication\", max_age=1",
            "{ctx}"
        );
        assert_eq!(check(&s, Some(&cookie), Some("3600")).await.status(), 200);

        // Reauth: 200 with the session, auth_time advanced, version + 1; then it passes.
        let res = s
            .post(&format!("/v1/sessions/{id}/reauth"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{ctx}");
        assert_eq!(res.headers()["etag"], "\"2\"", "{ctx}");
        let reauthed: Value = res.json().await.unwrap();
        assert_eq!(reauthed["id"], id.as_str());
        assert!(
            reauthed["auth_time"].as_i64().unwrap() > created["auth_time"].as_i64().unwrap(),
            "{ctx}: {reauthed}"
        );
        assert_eq!(reauthed["version"], 2, "{ctx}");
        let ok = check(&s, Some(&cookie), Some("60")).await;
        assert_eq!(ok.status(), 200, "{ctx}");
        assert_eq!(
            ok.headers()["x-sessiond-auth-time"],
            reauthed["auth_time"].to_string().as_str()
        );
        let (_, got) = json(s.get(&format!("/v1/sessions/{id}")).bearer_auth(KEY)).await;
        assert_eq!(got["auth_time"], reauthed["auth_time"], "{ctx}: stored");
        let (status, body) = json(
            s.post("/v1/sessions/no-such-session/reauth")
                .bearer_auth(KEY),
        )
        .await;
        assert_error(
            status,
            &body,
            404,
            &format!("{ctx}: reauth of an unknown id"),
        );
        s.stop().await;
    }
}

/// A pass slides the idle deadline like a read: written once it moved by `touch_fraction`
/// of the window, not on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_slides_the_session_without_a_write_per_request() {
    for (fraction, slides) in [(0.5, false), (0.0, true)] {
        let s = TestServer::start(EngineKind::Sqlite, |c| {
            c.api_keys = vec![KEY.into()];
            c.sessions.touch_fraction = fraction;
        })
        .await;
        let created = create(&s, json!({"user_id": "ada", "idle_ttl_s": 60})).await;
        let id = created["id"].as_str().unwrap();
        let before = created["expires_at"].as_i64().unwrap();
        while sessiond_store::now_ms() <= created["created_at"].as_i64().unwrap() + 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for _ in 0..3 {
            let status = status_of(&s, &format!("sessiond_session={id}")).await;
            assert_eq!(status, 200);
        }
        // The user's listing reads the store without sliding anything.
        let (_, listed) = json(s.get("/v1/users/ada/sessions").bearer_auth(KEY)).await;
        let after = listed["sessions"][0]["expires_at"].as_i64().unwrap();
        assert_eq!(
            after > before,
            slides,
            "fraction {fraction}: {before} -> {after}"
        );
        s.stop().await;
    }
}

/// `realtime.session_cookies` is the old name of `sessions.cookies`: alone it is taken, the
/// same value in both is fine, different values are a configuration error naming both.
#[test]
fn the_old_cookie_key_is_an_alias_and_a_conflict_is_refused() {
    use sessiond::config::Config;
    let list = |names: &[&str]| Some(names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
    let mut c = Config::default();
    assert_eq!(c.session_cookies(), vec!["sessiond_session".to_string()]);
    c.realtime.session_cookies = list(&["old"]);
    c.validate().unwrap();
    assert_eq!(c.session_cookies(), vec!["old".to_string()]);
    c.sessions.cookies = list(&["old"]);
    c.validate().unwrap();
    c.sessions.cookies = list(&["new"]);
    let err = format!("{:#}", c.validate().unwrap_err());
    assert!(
        err.contains("sessions.cookies") && err.contains("realtime.session_cookies"),
        "{err}"
    );
    c.realtime.session_cookies = None;
    c.validate().unwrap();
    assert_eq!(c.session_cookies(), vec!["new".to_string()]);
    for bad in [&[][..], &["a b"][..], &["a=b"][..]] {
        c.sessions.cookies = list(bad);
        assert!(c.validate().is_err(), "{bad:?}");
    }
}
