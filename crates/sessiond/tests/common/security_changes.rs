//! Acknowledged session changes and their security events, for the kill -9 tests (SQLite and
//! Redis): makes concurrent changes through a running server, then polls a server's user
//! streams until every acknowledged change has its event.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The users the changes spread over.
pub const USERS: usize = 4;

/// One acknowledged change set of a session.
#[derive(Debug)]
pub struct Acked {
    pub user: String,
    pub id: String,
    pub patched: bool,
    pub deleted: bool,
}

/// The path of `user`'s security stream.
pub fn user_stream(user: &str) -> String {
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(user));
    format!("/v1/stream/__security/users/{hash}")
}

/// Every message of the stream at `url` (none while it does not exist).
pub async fn events(http: &reqwest::Client, url: &str, key: &str) -> Vec<Value> {
    let res = http
        .get(format!("{url}?offset=-1"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    if res.status() == 404 {
        return Vec::new();
    }
    assert_eq!(res.status(), 200, "{url}");
    res.json::<Vec<Value>>().await.unwrap()
}

/// Whether `events` has a `kind` event of `session`.
pub fn has(events: &[Value], kind: &str, session: &str) -> bool {
    events
        .iter()
        .any(|e| e["type"] == kind && e["session_id"] == session)
}

/// Creates `sessions` sessions through `base` concurrently, patching every third (when
/// `patch`) and deleting every other one; returns what was acknowledged.
pub async fn changes(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    sessions: usize,
    patch: bool,
) -> Vec<Acked> {
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let (http, base, key) = (http.clone(), base.to_string(), key.to_string());
        tasks.push(tokio::spawn(async move {
            let user = format!("k9-{}", i % USERS);
            let res = http
                .post(format!("{base}/v1/sessions"))
                .bearer_auth(&key)
                .json(&json!({"user_id": user, "data": {"n": i}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            let id = res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let patched = patch && i % 3 == 0;
            if patched {
                let res = http
                    .patch(format!("{base}/v1/sessions/{id}"))
                    .bearer_auth(&key)
                    .json(&json!({"data": {"seen": true}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
            }
            let deleted = i % 2 == 0;
            if deleted {
                let res = http
                    .delete(format!("{base}/v1/sessions/{id}"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 204);
            }
            Acked {
                user,
                id,
                patched,
                deleted,
            }
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    acked
}

/// How many events `acked` recorded.
pub fn event_count(acked: &[Acked]) -> usize {
    acked
        .iter()
        .map(|a| 1 + usize::from(a.patched) + usize::from(a.deleted))
        .sum()
}

/// Polls the user streams on `base` until every change of `acked` has its event (60 s).
pub async fn wait_for_all(http: &reqwest::Client, base: &str, key: &str, acked: &[Acked]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for user in (0..USERS).map(|n| format!("k9-{n}")) {
        let url = format!("{base}{}", user_stream(&user));
        let mine: Vec<&Acked> = acked.iter().filter(|a| a.user == user).collect();
        loop {
            let got = events(http, &url, key).await;
            let missing = mine.iter().find(|a| {
                !has(&got, "session.created", &a.id)
                    || (a.patched && !has(&got, "session.context_changed", &a.id))
                    || (a.deleted && !has(&got, "session.revoked", &a.id))
            });
            match missing {
                None => break,
                Some(m) => assert!(
                    Instant::now() < deadline,
                    "acknowledged change without its event: {m:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
