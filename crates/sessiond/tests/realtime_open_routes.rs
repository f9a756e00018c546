//! Sessions created on an open route (`open_routes = ["compat"]`, no service credential) name
//! a user but prove nothing: realtime refuses them (403 saying why), and they and the compat
//! cache namespaces have budgets of their own, so anonymous creates can neither evict a keyed
//! login nor fill the native cache's namespace budget. Real server, real WebSocket client,
//! every engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{assert_error, engines, json, TestServer};
use realtime_support::{connect, session};
use serde_json::json;
use sessiond::config::RouteSet;

const KEY: &str = "service-key-for-the-open-routes-test";

async fn anonymous_compat_session(s: &TestServer, user: &str) -> String {
    let (status, body) = json(
        s.post("/compat/state/create")
            .json(&json!({"userId": user})),
    )
    .await;
    assert_eq!(status, 201, "anonymous compat create: {body}");
    body["sessionId"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_route_sessions_never_prove_identity_and_have_their_own_budgets() {
    for engine in engines() {
        let s = TestServer::start(engine, |c| {
            c.api_keys = vec![KEY.into()];
            c.open_routes = vec![RouteSet::Compat];
            c.sessions.max_sessions_per_user = 3;
            c.sessions.max_open_route_sessions_per_user = 2;
            c.sessions.cache.max_namespaces = 2;
            c.sessions.cache.max_compat_namespaces = 2;
        })
        .await;
        let ctx = format!("{engine:?}");
        let alice = session(&s, "alice", Some(KEY)).await;

        // The attack: an anonymous caller names alice on the open compat surface.
        let forged = anonymous_compat_session(&s, "alice").await;
        let (_, view) = json(s.get(&format!("/v1/sessions/{forged}")).bearer_auth(KEY)).await;
        assert_eq!(view["origin"], "open_route", "{ctx}: {view}");
        let (_, view) = json(s.get(&format!("/v1/sessions/{alice}")).bearer_auth(KEY)).await;
        assert_eq!(view["origin"], "service", "{ctx}: {view}");

        // Realtime refuses it on every entry point, with a 403 that says why.
        for path in [
            format!("/v1/realtime?token={forged}"),
            format!("/__user-session?userId=alice&token={forged}"),
        ] {
            let (status, body) = connect(&s, &path, &[]).await.refused();
            assert_error(status, &body, 403, &format!("{ctx}: {path}"));
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("open route"), "{ctx}: {message}");
        }
        let (status, body) = json(
            s.get(&format!(
                "/v1/realtime/sse?channels=user:alice&token={forged}"
            ))
            .header("accept", "text/event-stream"),
        )
        .await;
        assert_error(status, &body, 403, &format!("{ctx}: sse"));
        // The keyed session still works.
        let mut ws = connect(&s, &format!("/v1/realtime?token={alice}"), &[])
            .await
            .open();
        assert_eq!(ws.expect("connected").await["userId"], "alice");

        // Anonymous creates for alice evict only open-route sessions, never her login.
        let mut forged_ids = vec![forged];
        for _ in 0..10 {
            forged_ids.push(anonymous_compat_session(&s, "alice").await);
        }
        let (status, _) = json(s.get(&format!("/v1/sessions/{alice}")).bearer_auth(KEY)).await;
        assert_eq!(
            status, 200,
            "{ctx}: keyed session survived 11 anonymous creates"
        );
        ws.send(json!({"type": "ping", "id": 1})).await;
        ws.expect("pong").await;
        let (_, listed) = json(s.get("/v1/users/alice/sessions").bearer_auth(KEY)).await;
        let origins: Vec<&str> = listed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["origin"].as_str().unwrap())
            .collect();
        assert_eq!(
            origins.iter().filter(|o| **o == "open_route").count(),
            2,
            "{ctx}: open-route sessions held to their own cap: {listed}"
        );
        assert_eq!(origins.iter().filter(|o| **o == "service").count(), 1);

        // Compat cache namespaces fill their own budget, not the native cache's.
        let mut refused = false;
        for user in ["u1", "u2", "u3", "u4"] {
            let res = s
                .put(&format!("/compat/state/calendars?userId={user}"))
                .json(&json!([{"id": 1}]))
                .send()
                .await
                .unwrap();
            refused |= res.status() == 429;
        }
        assert!(refused, "{ctx}: the compat namespace budget is enforced");
        for ns in ["native-a", "native-b"] {
            let res = s
                .put(&format!("/v1/cache/{ns}/k"))
                .bearer_auth(KEY)
                .json(&json!({"data": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                204,
                "{ctx}: native namespace {ns} still admitted"
            );
        }
        s.stop().await;
    }
}
