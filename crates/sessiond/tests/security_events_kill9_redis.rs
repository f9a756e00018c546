//! The real binary on Redis (`appendonly yes`, `appendfsync always`), killed with SIGKILL
//! while the security events of its acknowledged session changes are still queued, then
//! Redis itself killed with SIGKILL and restarted: a new sessiond delivers every one of those
//! events. The event was written in the same Lua script as its change, into the outbox, so
//! it is on disk whenever the change is acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;
use sha2::{Digest, Sha256};

#[path = "common/binary.rs"]
mod binary;

use binary::{metric, Binary};

const KEY: &str = "kill-9-redis-security-key-0123456789";
const USERS: usize = 4;
const SESSIONS: usize = 60;

/// A node whose relay, once woken by a change, waits `linger_ms` before its pass: with a
/// long linger the acknowledged changes' events stay queued until the process is killed.
fn node(redis: &RedisServer, linger_ms: u64) -> Binary {
    Binary::spawn_on_redis(
        &redis.url(),
        &[],
        &[
            ("SESSIOND_API_KEYS", KEY.into()),
            ("SESSIOND_SECURITY__RELAY_LINGER_MS", linger_ms.to_string()),
        ],
    )
}

fn user_stream(node: &Binary, user: &str) -> String {
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(user));
    node.url(&format!("/v1/stream/__security/users/{hash}?offset=-1"))
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

/// One acknowledged change set: (user, session id, patched, deleted).
type Acked = (String, String, bool, bool);

/// Creates sessions through `node`, patching every third and deleting every other one.
async fn changes(http: &reqwest::Client, node: &Binary) -> Vec<Acked> {
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let (http, base) = (http.clone(), node.base.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("k9r-{}", i % USERS);
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
            let patched = i % 3 == 0;
            if patched {
                let res = http
                    .patch(format!("{base}/v1/sessions/{id}"))
                    .bearer_auth(KEY)
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
                    .bearer_auth(KEY)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 204);
            }
            (user, id, patched, deleted)
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    acked
}

/// How many events the changes in `acked` recorded.
fn event_count(acked: &[Acked]) -> usize {
    acked
        .iter()
        .map(|(_, _, patched, deleted)| 1 + usize::from(*patched) + usize::from(*deleted))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_events_survive_kill_9_of_sessiond_and_of_redis() {
    let mut redis = RedisServer::start_durable();
    let http = reqwest::Client::new();
    let first = node(&redis, 600_000);
    let acked = changes(&http, &first).await;
    // The precondition, observed: the relay has delivered (almost) nothing of it.
    let relayed = metric(&http, &first.base, "sessiond_security_events_relayed_total").await;
    assert!(
        relayed < (event_count(&acked) / 2) as f64,
        "the relay ran before the kill ({relayed} relayed): the test proves nothing"
    );
    first.kill(); // SIGKILL: no shutdown pass of the relay.
    redis.kill9();
    redis.restart();

    let second = node(&redis, 100);
    let deadline = Instant::now() + Duration::from_secs(60);
    for user in (0..USERS).map(|n| format!("k9r-{n}")) {
        let url = user_stream(&second, &user);
        let mine: Vec<&Acked> = acked.iter().filter(|a| a.0 == user).collect();
        loop {
            let got = events(&http, &url).await;
            let missing = mine.iter().find(|(_, id, patched, deleted)| {
                !has(&got, "session.created", id)
                    || (*patched && !has(&got, "session.context_changed", id))
                    || (*deleted && !has(&got, "session.revoked", id))
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
    second.kill();
}
