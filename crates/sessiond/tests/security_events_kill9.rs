//! The real binary on SQLite, killed with SIGKILL while security events are still queued: every
//! acknowledged session change has its event after the restart (the event was committed with
//! the change, in the outbox, and the relay delivers it once the server runs again).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::process::Child;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[path = "common/binary.rs"]
mod binary;

const KEY: &str = "kill-9-security-key-0123456789abcdef";

/// `sessiond serve` on SQLite in `data_dir`, relaying one event per batch (so the relay lags
/// far behind the acknowledged changes when the process is killed).
fn spawn(data_dir: &std::path::Path) -> (Child, String) {
    let args = [
        OsStr::new("--engine"),
        OsStr::new("sqlite"),
        OsStr::new("--data-dir"),
    ];
    binary::serve(
        args.into_iter().chain([data_dir.as_os_str()]),
        &[
            ("SESSIOND_SECURITY__RELAY_BATCH", "1".into()),
            ("SESSIOND_API_KEYS", KEY.into()),
        ],
    )
}

fn user_stream(base: &str, user: &str) -> String {
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(user));
    format!("{base}/v1/stream/__security/users/{hash}?offset=-1")
}

async fn events(http: &reqwest::Client, url: &str) -> Vec<Value> {
    let res = http.get(url).bearer_auth(KEY).send().await.unwrap();
    if res.status() == 404 {
        return Vec::new();
    }
    assert_eq!(res.status(), 200, "{url}");
    res.json::<Vec<Value>>().await.unwrap()
}

fn has(events: &[Value], kind: &str, session: &str) -> bool {
    events
        .iter()
        .any(|e| e["type"] == kind && e["session_id"] == session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_have_their_events_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn(dir.path());
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..120 {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("k9-{}", i % 4);
            let res = http
                .post(format!("{base}/v1/sessions"))
                .bearer_auth(KEY)
                .json(&json!({"user_id": user, "data": {"n": i}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            let id = res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let deleted = i % 2 == 0;
            if deleted {
                let res = http
                    .delete(format!("{base}/v1/sessions/{id}"))
                    .bearer_auth(KEY)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 204);
            }
            (user, id, deleted)
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    child.kill().unwrap(); // SIGKILL: no flush, no shutdown hook, no relay pass.
    child.wait().unwrap();

    let (mut child, base) = spawn(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    for user in (0..4).map(|n| format!("k9-{n}")) {
        let url = user_stream(&base, &user);
        let mine: Vec<&(String, String, bool)> = acked.iter().filter(|a| a.0 == user).collect();
        loop {
            let got = events(&http, &url).await;
            let missing = mine.iter().find(|(_, id, deleted)| {
                !has(&got, "session.created", id) || (*deleted && !has(&got, "session.revoked", id))
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
    child.kill().unwrap();
    child.wait().unwrap();
}
