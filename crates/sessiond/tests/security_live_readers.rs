//! A user's security stream on SQLite, where the engine appends the user's events in the
//! changes' own transactions (not through the streams capability): a long-poll and an SSE
//! reader waiting at the stream's tail are woken by the next change's event, a plain read sees
//! it as soon as the change is answered, and `security.retention_s` still trims the stream
//! (the retention pass writes the time marks those appends do not).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{json, metrics_text, TestServer};
use serde_json::{json, Value};
use sessiond::config::EngineKind;
use sha2::{Digest, Sha256};

const KEY: &str = "security-live-readers-key-0123456789";

fn user_stream(user: &str) -> String {
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(user));
    format!("/v1/stream/__security/users/{hash}")
}

/// The live readers of `mode` open on the server, from `sessiond_streams_live_open`.
async fn live_open(s: &TestServer, mode: &str) -> f64 {
    let prefix = format!("sessiond_streams_live_open{{mode=\"{mode}\"}} ");
    metrics_text(s)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_readers_of_a_user_stream_wake_for_the_next_event_on_sqlite() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![KEY.into()];
        c.streams.long_poll_timeout_ms = 15_000;
    })
    .await;
    let path = user_stream("lin");
    let (status, created) = json(
        s.post("/v1/sessions")
            .bearer_auth(KEY)
            .json(&json!({"user_id": "lin"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    // The create's event is there once the create is answered: no relay in between.
    let read = s
        .get(&format!("{path}?offset=-1"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let tail = read.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_string();
    let events: Vec<Value> = read.json().await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "session.created");

    let long_poll = s
        .get(&format!("{path}?offset={tail}&live=long-poll"))
        .bearer_auth(KEY)
        .send();
    let long_poll = tokio::spawn(long_poll);
    let mut sse = s
        .get(&format!("{path}?offset={tail}&live=sse"))
        .bearer_auth(KEY)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    // Both wait at the tail before the change.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while live_open(&s, "long_poll").await < 1.0 || live_open(&s, "sse").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the readers wait");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let res = s
        .delete(&format!("/v1/sessions/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);

    // Well before the long-poll's 15 s timeout (which would answer 204 without data).
    let woken = tokio::time::timeout(Duration::from_secs(10), long_poll)
        .await
        .expect("the long-poll is woken by the event")
        .unwrap()
        .unwrap();
    assert_eq!(woken.status(), 200);
    let events: Vec<Value> = woken.json().await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "session.revoked");
    assert_eq!(events[0]["session_id"], id.as_str());

    let mut seen = String::new();
    while !seen.contains("session.revoked") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), sse.chunk())
            .await
            .expect("the SSE reader gets the event")
            .unwrap()
            .expect("the SSE response stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(&id), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_a_user_stream_the_engine_appends_to_on_sqlite() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![KEY.into()];
        c.security.retention_s = 1;
        c.streams.sweep_interval_s = 1;
        c.streams.retention_mark_interval_s = 1;
    })
    .await;
    let path = user_stream("ret");
    let create = || {
        s.post("/v1/sessions")
            .bearer_auth(KEY)
            .json(&json!({"user_id": "ret"}))
    };
    let (status, first) = json(create()).await;
    assert_eq!(status, 201, "{first}");
    let events = |s: &TestServer| {
        let read = s.get(&format!("{path}?offset=-1")).bearer_auth(KEY).send();
        async move { read.await.unwrap().json::<Vec<Value>>().await.unwrap() }
    };
    assert_eq!(events(&s).await.len(), 1);
    // A pass marks the tail, a pass a retention period later cuts below it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !events(&s).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old event is trimmed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The trimmed stream still takes the next change's event.
    let (status, second) = json(create()).await;
    assert_eq!(status, 201, "{second}");
    let now = events(&s).await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0]["session_id"], second["id"]);
}
