//! The native session API over a real listener, on every engine.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_error, engines, json, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_crud_with_etags_on_every_engine() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let ctx = format!("{engine:?}");
        let res = s
            .post("/v1/sessions")
            .json(&json!({"user_id": "alice", "data": {"cart": [1], "theme": "dark"}, "device": {"ua": "test"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{ctx}");
        assert_eq!(res.headers()["etag"], "\"1\"");
        let created: serde_json::Value = res.json().await.unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        assert!(id.len() >= 22, "{ctx}: id carries >= 128 bits");
        assert_eq!(created["user_id"], "alice");
        assert_eq!(created["version"], 1);
        assert!(created["expires_at"].as_i64().unwrap() > created["created_at"].as_i64().unwrap());

        let (status, got) = json(s.get(&format!("/v1/sessions/{id}"))).await;
        assert_eq!(status, 200, "{ctx}");
        assert_eq!(got["data"], json!({"cart": [1], "theme": "dark"}));
        assert_eq!(got["device"], json!({"ua": "test"}));

        // Merge patch: null deletes, nested objects merge.
        let res = s
            .patch(&format!("/v1/sessions/{id}"))
            .header("if-match", "\"1\"")
            .json(&json!({"data": {"theme": null, "prefs": {"lang": "fr"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{ctx}");
        assert_eq!(res.headers()["etag"], "\"2\"");
        let (_, got) = json(s.get(&format!("/v1/sessions/{id}"))).await;
        assert_eq!(
            got["data"],
            json!({"cart": [1], "prefs": {"lang": "fr"}}),
            "{ctx}"
        );

        // Stale If-Match is a 412 and changes nothing.
        let (status, body) = json(
            s.put(&format!("/v1/sessions/{id}"))
                .header("if-match", "\"1\"")
                .json(&json!({"data": {}})),
        )
        .await;
        assert_error(status, &body, 412, &ctx);
        let (status, body) = json(
            s.put(&format!("/v1/sessions/{id}"))
                .header("if-match", "\"2\"")
                .json(&json!({"data": {"only": true}})),
        )
        .await;
        assert_eq!(status, 200, "{ctx}: {body}");
        assert_eq!(body["data"], json!({"only": true}));
        assert_eq!(body["version"], 3);

        // Unconfirmed writes are accepted when asked for explicitly.
        let (status, _) = json(
            s.patch(&format!("/v1/sessions/{id}"))
                .header("sessiond-durability", "unconfirmed")
                .json(&json!({"data": {"u": 1}})),
        )
        .await;
        assert_eq!(status, 200, "{ctx}");
        let (status, body) = json(
            s.patch(&format!("/v1/sessions/{id}"))
                .header("sessiond-durability", "maybe")
                .json(&json!({"data": {}})),
        )
        .await;
        assert_error(status, &body, 400, &ctx);

        let (status, body) = json(
            s.delete(&format!("/v1/sessions/{id}"))
                .header("if-match", "\"1\""),
        )
        .await;
        assert_error(status, &body, 412, &ctx);
        let res = s
            .delete(&format!("/v1/sessions/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{ctx}");
        for req in [
            s.get(&format!("/v1/sessions/{id}")),
            s.delete(&format!("/v1/sessions/{id}")),
        ] {
            let (status, body) = json(req).await;
            assert_error(status, &body, 404, &ctx);
        }
        // Updates never create (no session fixation).
        let (status, body) = json(
            s.put("/v1/sessions/chosen-by-client")
                .json(&json!({"data": {}})),
        )
        .await;
        assert_error(status, &body, 404, &ctx);
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_patches_keep_every_key_on_every_engine() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let (_, created) = json(s.post("/v1/sessions").json(&json!({"data": {}}))).await;
        let id = created["id"].as_str().unwrap().to_string();
        let mut tasks = Vec::new();
        for i in 0..100 {
            let req = s
                .patch(&format!("/v1/sessions/{id}"))
                .json(&json!({"data": {format!("k{i}"): i}}));
            tasks.push(tokio::spawn(async move {
                req.send().await.unwrap().status().as_u16()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200, "{engine:?}");
        }
        let (_, got) = json(s.get(&format!("/v1/sessions/{id}"))).await;
        assert_eq!(
            got["data"].as_object().unwrap().len(),
            100,
            "{engine:?}: no lost update"
        );
        assert_eq!(got["version"], 101, "{engine:?}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_listing_revoke_and_per_user_limit_on_every_engine() {
    for engine in engines() {
        let s = TestServer::start(engine, |c| c.sessions.max_sessions_per_user = 3).await;
        let ctx = format!("{engine:?}");
        let mut ids = Vec::new();
        for i in 0..4 {
            let (status, body) = json(
                s.post("/v1/sessions")
                    .json(&json!({"user_id": "bob", "device": {"n": i}})),
            )
            .await;
            assert_eq!(status, 201, "{ctx}");
            ids.push((
                body["created_at"].as_i64().unwrap(),
                body["id"].as_str().unwrap().to_string(),
            ));
        }
        // "Oldest" is by creation time, ties broken by id (sessions created in the same ms).
        ids.sort();
        let ids: Vec<String> = ids.into_iter().map(|(_, id)| id).collect();
        json(s.post("/v1/sessions").json(&json!({"user_id": "bobby"}))).await;
        let (status, list) = json(s.get("/v1/users/bob/sessions")).await;
        assert_eq!(status, 200);
        let listed: Vec<&str> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            listed,
            ids[1..].iter().map(String::as_str).collect::<Vec<_>>(),
            "{ctx}: the oldest was evicted at the limit of 3"
        );
        assert!(
            list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["device"]["n"].is_i64()),
            "device info listed"
        );
        assert!(list["sessions"][0]["last_seen_at"].is_i64());
        let (status, body) = json(s.get(&format!("/v1/sessions/{}", ids[0]))).await;
        assert_error(status, &body, 404, &ctx);

        let (status, body) =
            json(s.delete(&format!("/v1/users/bob/sessions?except={}", ids[3]))).await;
        assert_eq!(status, 200, "{ctx}");
        assert_eq!(body["revoked"], 2);
        for revoked in &ids[1..3] {
            let (status, body) = json(s.get(&format!("/v1/sessions/{revoked}"))).await;
            assert_error(
                status,
                &body,
                404,
                &format!("{ctx}: a revoked session is gone at once"),
            );
        }
        let (_, list) = json(s.get("/v1/users/bob/sessions")).await;
        assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
        assert_eq!(list["sessions"][0]["id"], ids[3].as_str());
        let (_, list) = json(s.get("/v1/users/bobby/sessions")).await;
        assert_eq!(
            list["sessions"].as_array().unwrap().len(),
            1,
            "{ctx}: user `bobby` untouched"
        );
        let (_, body) = json(s.delete("/v1/users/bob/sessions")).await;
        assert_eq!(body["revoked"], 1);
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_gone_everywhere() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let (_, body) = json(
            s.post("/v1/sessions")
                .json(&json!({"user_id": "eve", "absolute_ttl_s": 1})),
        )
        .await;
        let id = body["id"].as_str().unwrap().to_string();
        let expires_at = body["expires_at"].as_i64().unwrap();
        // Wait for the deadline the server announced (time passing is the behaviour under test).
        let wait = expires_at - sessiond_store::now_ms() + 20;
        tokio::time::sleep(std::time::Duration::from_millis(wait.max(0) as u64)).await;
        for req in [
            s.get(&format!("/v1/sessions/{id}")),
            s.patch(&format!("/v1/sessions/{id}"))
                .json(&json!({"data": {}})),
            s.delete(&format!("/v1/sessions/{id}")),
        ] {
            let (status, body) = json(req).await;
            assert_error(status, &body, 404, &format!("{engine:?}"));
        }
        let (_, list) = json(s.get("/v1/users/eve/sessions")).await;
        assert!(list["sessions"].as_array().unwrap().is_empty());
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_are_clear_4xx() {
    let s = TestServer::start(sessiond::config::EngineKind::Sqlite, |c| {
        c.http.max_body_bytes = 4096;
        c.sessions.max_value_bytes = 1000;
        c.sessions.max_id_bytes = 32;
    })
    .await;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            s.post("/v1/sessions")
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "malformed JSON",
        ),
        (
            s.post("/v1/sessions")
                .header("content-type", "application/json")
                .body(""),
            400,
            "empty body",
        ),
        (
            s.post("/v1/sessions").json(&json!({"data": [1, 2]})),
            400,
            "array data",
        ),
        (
            s.post("/v1/sessions").json(&json!({"data": "x"})),
            400,
            "string data",
        ),
        (
            s.post("/v1/sessions").json(&json!({"user_id": 5})),
            400,
            "wrong type",
        ),
        (
            s.post("/v1/sessions").json(&json!({"surprise": 1})),
            400,
            "unknown field",
        ),
        (
            s.post("/v1/sessions").json(&json!({"idle_ttl_s": 0})),
            400,
            "zero ttl",
        ),
        (
            s.post("/v1/sessions").json(&json!({"idle_ttl_s": -5})),
            400,
            "negative ttl",
        ),
        (
            s.post("/v1/sessions").json(&json!({"device": "phone"})),
            400,
            "device not an object",
        ),
        (
            s.post("/v1/sessions")
                .json(&json!({"user_id": "u".repeat(33)})),
            400,
            "user id too long",
        ),
        (
            s.post("/v1/sessions")
                .json(&json!({"data": {"x": "y".repeat(2000)}})),
            413,
            "value too large",
        ),
        (
            s.post("/v1/sessions")
                .header("content-type", "application/json")
                .body(format!("{{\"data\":{{\"x\":\"{}\"}}}}", "y".repeat(5000))),
            413,
            "body too large",
        ),
        (
            s.get(&format!("/v1/sessions/{}", "x".repeat(40))),
            400,
            "id too long",
        ),
        (
            s.patch("/v1/sessions/whatever").json(&json!({"id": "new"})),
            400,
            "patching a read-only field",
        ),
        (
            s.patch("/v1/sessions/whatever").json(&json!([1])),
            400,
            "patch not an object",
        ),
        (
            s.put("/v1/cache/_reserved/k").json(&json!({"data": 1})),
            400,
            "reserved namespace",
        ),
        (
            s.put("/v1/cache/ns/k").json(&json!({"ttl_s": 5})),
            400,
            "cache put without data",
        ),
        (s.get("/v1/nothing-here"), 404, "unknown route"),
        (
            s.delete("/v1/users/u/sessions?except=a&bogus=1"),
            400,
            "unknown query parameter",
        ),
    ];
    for (req, expected, what) in cases {
        let (status, body) = json(req).await;
        assert_error(status, &body, expected, what);
    }
    s.stop().await;
}
