//! The TTL cache and the two seed-compatible surfaces, walked as their real clients walk them.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_error, engines, json, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_keeps_falsy_values_and_reports_hits_on_every_engine() {
    for engine in engines() {
        let s = TestServer::start(engine, |c| c.sessions.cache.max_namespaces = 3).await;
        let ctx = format!("{engine:?}");
        for (i, value) in [
            json!(0),
            json!(false),
            json!(""),
            json!(null),
            json!({"a": [1]}),
        ]
        .iter()
        .enumerate()
        {
            let res = s
                .put(&format!("/v1/cache/ns1/k{i}"))
                .json(&json!({"data": value, "ttl_s": 60}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204, "{ctx}");
            let res = s.get(&format!("/v1/cache/ns1/k{i}")).send().await.unwrap();
            assert_eq!(res.status(), 200, "{ctx}: {value} is a hit");
            assert_eq!(res.headers()["x-cache"], "HIT");
            let age: i64 = res.headers()["x-cache-age"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(age >= 0);
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(&body, value, "{ctx}");
        }
        let res = s.get("/v1/cache/ns1/absent").send().await.unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(res.headers()["x-cache"], "MISS");
        // A session id is not a cache key.
        let (_, session) = json(s.post("/v1/sessions").json(&json!({"data": {"secret": 1}}))).await;
        let sid = session["id"].as_str().unwrap();
        assert_eq!(
            s.get(&format!("/v1/cache/ns1/{sid}"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        // Delete and clear.
        assert_eq!(
            s.delete("/v1/cache/ns1/k0").send().await.unwrap().status(),
            204
        );
        assert_eq!(
            s.delete("/v1/cache/ns1/k0").send().await.unwrap().status(),
            404
        );
        s.put("/v1/cache/ns2/x")
            .json(&json!({"data": 1}))
            .send()
            .await
            .unwrap();
        let (status, body) = json(s.delete("/v1/cache/ns1")).await;
        assert_eq!(status, 200);
        assert_eq!(body["cleared"], 4, "{ctx}");
        assert_eq!(
            s.get("/v1/cache/ns2/x").send().await.unwrap().status(),
            200,
            "{ctx}: other namespace kept"
        );
        // Namespace count limit.
        s.put("/v1/cache/ns3/x")
            .json(&json!({"data": 1}))
            .send()
            .await
            .unwrap();
        s.put("/v1/cache/ns4/x")
            .json(&json!({"data": 1}))
            .send()
            .await
            .unwrap();
        let (status, body) = json(s.put("/v1/cache/ns5/x").json(&json!({"data": 1}))).await;
        assert_error(status, &body, 429, &ctx);
        s.stop().await;
    }
}

/// Seed B's real client (user-mgmt): login creates a session from the user row, the RBAC
/// layer caches permissions with a 60 s TTL, role changes invalidate, logout deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_worker_client_flow_on_every_engine() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let ctx = format!("{engine:?}");
        let p = "/compat/session-state";
        let res = s
            .post(&format!("{p}/create"))
            .header("content-type", "application/json")
            .body(r#"{"username":"ada","firstName":"Ada","lastName":"Lovelace"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{ctx}");
        let id = res.text().await.unwrap();
        assert!(
            !id.is_empty() && !id.contains('"'),
            "{ctx}: the id is plain text: {id}"
        );

        let res = s.get(&format!("{p}/get/{id}")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let user: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            user,
            json!({"username":"ada","firstName":"Ada","lastName":"Lovelace"})
        );

        let res = s
            .patch(&format!("{p}/add/{id}"))
            .header("content-type", "application/json")
            .body(r#"{"permissions":["read"]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.text().await.unwrap(),
            "Session updated with additional data"
        );
        let (_, user) = json(s.get(&format!("{p}/get/{id}"))).await;
        assert_eq!(user["permissions"], json!(["read"]));
        assert_eq!(user["username"], "ada");

        let key = "permissions%3Auser%3A42";
        let res = s.get(&format!("{p}/cache/{key}")).send().await.unwrap();
        assert_eq!(
            (res.status().as_u16(), res.text().await.unwrap()),
            (404, "Cache miss".to_string())
        );
        let res = s
            .put(&format!("{p}/cache/{key}"))
            .header("content-type", "application/json")
            .body(r#"{"data":["read","write"],"ttl":60}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (res.status().as_u16(), res.text().await.unwrap()),
            (200, "Cache set".to_string())
        );
        let res = s.get(&format!("{p}/cache/{key}")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.json::<serde_json::Value>().await.unwrap(),
            json!(["read", "write"])
        );
        let res = s.delete(&format!("{p}/cache/{key}")).send().await.unwrap();
        assert_eq!(
            (res.status().as_u16(), res.text().await.unwrap()),
            (200, "Cache deleted".to_string())
        );
        assert_eq!(
            s.get(&format!("{p}/cache/{key}"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );

        let res = s
            .put(&format!("{p}/update/{id}"))
            .header("content-type", "application/json")
            .body(r#"{"username":"ada2"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (res.status().as_u16(), res.text().await.unwrap()),
            (200, "Session updated".to_string())
        );
        let res = s.delete(&format!("{p}/delete/{id}")).send().await.unwrap();
        assert_eq!(
            (res.status().as_u16(), res.text().await.unwrap()),
            (200, "Session deleted".to_string())
        );
        let res = s.get(&format!("{p}/get/{id}")).send().await.unwrap();
        assert_eq!(
            (res.status().as_u16(), res.text().await.unwrap()),
            (404, "Session not found".to_string())
        );

        // The seed's bugs, fixed.
        let res = s
            .put(&format!("{p}/update/attacker-chosen"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{ctx}: no create-on-PUT");
        let res = s
            .patch(&format!("{p}/add/attacker-chosen"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{ctx}: no create-on-PATCH");
        assert_eq!(
            s.post(&format!("{p}/create"))
                .header("content-type", "application/json")
                .body("{oops")
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        assert_eq!(
            s.post(&format!("{p}/create"))
                .header("content-type", "application/json")
                .body("[1,2]")
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        assert_eq!(
            s.put(&format!("{p}/cache/k"))
                .header("content-type", "application/json")
                .body(r#"{"ttl":60}"#)
                .send()
                .await
                .unwrap()
                .status(),
            400
        );
        s.put(&format!("{p}/cache/zero"))
            .header("content-type", "application/json")
            .body(r#"{"data":0}"#)
            .send()
            .await
            .unwrap();
        let res = s.get(&format!("{p}/cache/zero")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{ctx}: falsy cache value is a hit");
        assert_eq!(res.text().await.unwrap(), "0");
        let res = s.get(&format!("{p}/nothing")).send().await.unwrap();
        assert_eq!(
            (res.status().as_u16(), res.text().await.unwrap()),
            (404, "Invalid request".to_string())
        );
        let res = s.post(&format!("{p}/get/x")).send().await.unwrap();
        assert_eq!(res.status(), 404, "wrong method is `Invalid request` too");
        s.stop().await;
    }
}

/// Seed E's documented calendar-tool flow: create a session, miss the cache, fill it, hit it,
/// record the fetch in the session, read the session back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_objects_calendar_tool_flow_on_every_engine() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let ctx = format!("{engine:?}");
        let p = "/compat/state";
        let (status, created) = json(
            s.post(&format!("{p}/create"))
                .json(&json!({"data": {"createdBy": "calendar-tool"}, "userId": "u1"})),
        )
        .await;
        assert_eq!(status, 201, "{ctx}");
        let sid = created["sessionId"].as_str().unwrap().to_string();
        assert_eq!(
            created["session"]["id"],
            sid.as_str(),
            "{ctx}: the id the client gets is the id that works"
        );
        assert_eq!(created["session"]["userId"], "u1");
        assert!(created["session"]["createdAt"].is_i64());

        let (status, got) = json(s.get(&format!("{p}/get?id={sid}"))).await;
        assert_eq!(status, 200, "{ctx}");
        let user = got["session"]["userId"].as_str().unwrap();

        let res = s
            .get(&format!("{p}/calendars?userId={user}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert_eq!(
            res.json::<serde_json::Value>().await.unwrap(),
            json!({"error": "Cache miss"})
        );
        let calendars = json!([{"id": "personal", "displayName": "Personal"}]);
        let (status, body) = json(
            s.put(&format!("{p}/calendars?userId={user}"))
                .json(&calendars),
        )
        .await;
        assert_eq!((status, body), (200, json!({"success": true})));
        let res = s
            .get(&format!("{p}/calendars?userId={user}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "HIT");
        assert!(
            res.headers()["x-cache-age"]
                .to_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
                >= 0
        );
        assert_eq!(res.json::<serde_json::Value>().await.unwrap(), calendars);

        let (status, updated) = json(s.post(&format!("{p}/update")).json(
            &json!({"sessionId": sid, "data": {"lastCalendarFetch": 1, "calendarCount": 1}}),
        ))
        .await;
        assert_eq!(status, 200, "{ctx}");
        assert_eq!(updated["session"]["data"]["createdBy"], "calendar-tool");
        let (_, got) = json(s.get(&format!("{p}/get?id={sid}"))).await;
        assert_eq!(
            got["session"]["data"],
            json!({"createdBy": "calendar-tool", "lastCalendarFetch": 1, "calendarCount": 1})
        );

        // Events and preferences, and a clear that is exact per user.
        s.put(&format!("{p}/events/personal/extra?userId=a"))
            .json(&json!([1]))
            .send()
            .await
            .unwrap();
        s.put(&format!("{p}/preferences?userId=a"))
            .json(&json!({"tz": "UTC"}))
            .send()
            .await
            .unwrap();
        s.put(&format!("{p}/preferences?userId=ab"))
            .json(&json!({"tz": "CET"}))
            .send()
            .await
            .unwrap();
        let (_, ev) = json(s.get(&format!("{p}/events/personal?userId=a"))).await;
        assert_eq!(ev, json!([1]), "{ctx}: extra path segments are ignored");
        let (status, cleared) = json(s.delete(&format!("{p}/clear?userId=a"))).await;
        assert_eq!(
            (status, cleared),
            (200, json!({"success": true, "clearedEntries": 2}))
        );
        assert_eq!(
            s.get(&format!("{p}/preferences?userId=ab"))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{ctx}: clearing `a` spares `ab`"
        );

        let (status, body) = json(s.delete(&format!("{p}/delete?id={sid}"))).await;
        assert_eq!((status, body), (200, json!({"success": true})));
        let (status, body) = json(s.delete(&format!("{p}/delete?id={sid}"))).await;
        assert_eq!((status, body), (200, json!({"success": false})));
        let (status, body) = json(s.get(&format!("{p}/get?id={sid}"))).await;
        assert_eq!((status, body), (404, json!({"error": "Session not found"})));
        let (status, body) = json(s.get(&format!("{p}/get"))).await;
        assert_eq!(
            (status, body),
            (400, json!({"error": "Session ID required"}))
        );
        let (status, _) = json(
            s.post(&format!("{p}/create"))
                .header("content-type", "application/json")
                .body("{bad"),
        )
        .await;
        assert_eq!(status, 400, "{ctx}: bad JSON is a 400");
        let (status, _) = json(
            s.put(&format!("{p}/calendars?userId=a"))
                .header("content-type", "application/json")
                .body("{bad"),
        )
        .await;
        assert_eq!(status, 400);
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_route_and_rotate() {
    let s = TestServer::start(sessiond::config::EngineKind::Memory, |c| {
        c.api_keys = vec!["old-key-0123456789".into(), "new-key-0123456789".into()];
    })
    .await;
    for req in [
        s.post("/v1/sessions").json(&json!({})),
        s.get("/v1/sessions/x"),
        s.get("/v1/users/u/sessions"),
        s.get("/v1/cache/ns/k"),
        s.post("/compat/session-state/create").body("{}"),
        s.post("/compat/state/create").body("{}"),
        s.post("/v1/sessions").bearer_auth("wrong").json(&json!({})),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401);
    }
    for key in ["old-key-0123456789", "new-key-0123456789"] {
        let (status, _) = json(s.post("/v1/sessions").bearer_auth(key).json(&json!({}))).await;
        assert_eq!(status, 201, "key {key} accepted");
    }
    assert_eq!(s.get("/healthz").send().await.unwrap().status(), 200);
    assert_eq!(s.get("/readyz").send().await.unwrap().status(), 200);
    assert_eq!(
        s.get("/v1/unknown").send().await.unwrap().status(),
        404,
        "unknown routes are 404, not 401"
    );
    s.stop().await;

    let s = TestServer::start(sessiond::config::EngineKind::Memory, |c| {
        c.api_keys = vec!["k-0123456789abcdef".into()];
        c.open_routes = vec![sessiond::config::RouteSet::Compat];
    })
    .await;
    assert_eq!(
        s.post("/compat/state/create")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap()
            .status(),
        201,
        "opened set"
    );
    assert_eq!(
        s.post("/v1/sessions")
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "other sets stay closed"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints_report_health_and_metrics() {
    let s = TestServer::start(sessiond::config::EngineKind::Sqlite, |_| {}).await;
    let (status, body) = json(s.get("/readyz")).await;
    assert_eq!((status, body["engine"].as_str()), (200, Some("sqlite")));
    json(s.post("/v1/sessions").json(&json!({}))).await;
    let text = s
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "sessiond_http_requests_total",
        "sessiond_http_request_duration_seconds_bucket",
        "sessiond_engine_commit_batch_size",
        "sessiond_sessions_created_total",
    ] {
        assert!(text.contains(series), "/metrics exposes {series}");
    }
    assert!(
        text.contains("route=\"/v1/sessions\""),
        "labels use the route template"
    );
    s.stop().await;
}
