//! `streams.read_tokens_bound_to_sessions`: a read token's `session_id` names a
//! `/v1/sessions` session. Reads with the token of an unknown or ended session are 401; an
//! open SSE read and a waiting long-poll made with a token end when its session is revoked,
//! rotated away or expires. Off (the default), the claim is opaque as before. Real server,
//! SQLite; with and without the realtime hub (whose announcements are used when it runs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{json, TestServer};
use serde_json::json;
use sessiond::config::{Config, EngineKind};
use sessiond_http::jwt::sign_hs256;

const KEY: &str = "bound-streams-service-key";
const SECRET: &str = "bound-streams-read-token-secret-0123456789";
const STREAM: &str = "/v1/stream/feeds/ada";

fn configure(c: &mut Config, bound: bool) {
    c.api_keys = vec![KEY.into()];
    c.streams.read_token_secrets = vec![SECRET.into()];
    c.streams.read_tokens_bound_to_sessions = bound;
}

fn token(session_id: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    sign_hs256(
        &json!({"aud": "sessiond", "session_id": session_id, "exp": exp}),
        SECRET.as_bytes(),
    )
}

async fn setup(s: &TestServer, idle_ttl_s: u64) -> String {
    let res = s
        .put(STREAM)
        .bearer_auth(KEY)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (status, created) = json(
        s.post("/v1/sessions")
            .bearer_auth(KEY)
            .json(&json!({"user_id": "ada", "idle_ttl_s": idle_ttl_s})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_string()
}

async fn read_status(s: &TestServer, session_id: &str) -> u16 {
    let res = s
        .get(&format!("{STREAM}?offset=-1"))
        .bearer_auth(token(session_id))
        .send()
        .await
        .unwrap();
    res.status().as_u16()
}

/// Opens an SSE read with the token and waits for the stream's data.
async fn open_sse(s: &TestServer, session_id: &str) -> reqwest::Response {
    let mut res = s
        .get(&format!(
            "{STREAM}?offset=-1&live=sse&token={}",
            token(session_id)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("hello") {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .expect("SSE data in time")
            .unwrap()
            .expect("open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    res
}

/// The SSE body ends (EOF) within `within`; keepalive control events may come before.
async fn assert_ends(res: &mut reqwest::Response, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, res.chunk()).await {
            Err(_) => panic!("{what}: the SSE read is still open"),
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Ok(Ok(Some(_))) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_live_session_and_open_ones_end_with_it() {
    for realtime in [true, false] {
        let s = TestServer::start(EngineKind::Sqlite, |c| {
            configure(c, true);
            c.realtime.enabled = realtime;
        })
        .await;
        let ctx = format!("realtime {realtime}");
        let id = setup(&s, 3600).await;
        assert_eq!(read_status(&s, &id).await, 200, "{ctx}");
        assert_eq!(read_status(&s, "no-such-session").await, 401, "{ctx}");

        // Revoke: the open SSE read ends, a waiting long-poll answers 401, new reads are 401.
        let mut sse = open_sse(&s, &id).await;
        let poll = {
            let req = s
                .get(&format!("{STREAM}?offset=now&live=long-poll"))
                .bearer_auth(token(&id));
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        };
        let res = s
            .delete(&format!("/v1/sessions/{id}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_ends(&mut sse, Duration::from_secs(2), &ctx).await;
        let polled = tokio::time::timeout(Duration::from_secs(2), poll).await;
        assert_eq!(polled.expect("long-poll ended").unwrap(), 401, "{ctx}");
        assert_eq!(read_status(&s, &id).await, 401, "{ctx}: revoked");

        // Rotation: reads with the old id's token end; the new id's token reads.
        let id = setup_session(&s, 3600).await;
        let mut sse = open_sse(&s, &id).await;
        let (status, rotated) = json(
            s.post(&format!("/v1/sessions/{id}/rotate"))
                .bearer_auth(KEY),
        )
        .await;
        assert_eq!(status, 200);
        assert_ends(&mut sse, Duration::from_secs(2), &ctx).await;
        assert_eq!(read_status(&s, rotated["id"].as_str().unwrap()).await, 200);
        s.stop().await;
    }
}

async fn setup_session(s: &TestServer, idle_ttl_s: u64) -> String {
    let (status, created) = json(
        s.post("/v1/sessions")
            .bearer_auth(KEY)
            .json(&json!({"user_id": "ada", "idle_ttl_s": idle_ttl_s})),
    )
    .await;
    assert_eq!(status, 201);
    created["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_read_ends_when_its_session_expires() {
    let s = TestServer::start(EngineKind::Sqlite, |c| configure(c, true)).await;
    let id = setup(&s, 2).await;
    let mut sse = open_sse(&s, &id).await;
    assert_ends(&mut sse, Duration::from_secs(5), "idle expiry").await;
    assert_eq!(read_status(&s, &id).await, 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_the_claim_is_opaque() {
    let s = TestServer::start(EngineKind::Sqlite, |c| configure(c, false)).await;
    setup(&s, 3600).await;
    assert_eq!(read_status(&s, "any-application-session").await, 200);
    s.stop().await;
}
