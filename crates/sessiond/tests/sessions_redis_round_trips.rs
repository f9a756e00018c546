//! A session write on a standalone Redis with security events on costs one Redis round trip
//! (issue 10's target): the update script applies a data change and queues its
//! `session.context_changed` event, whose changed keys and version it fills in itself; a
//! create (below the per-user cap), a touch and a revoke are one script each with every index
//! they change; a rotation reads the session, then moves it in one script (2). Counted with
//! the node's own `sessiond_engine_redis_round_trips_total{op}`, and every change's event is
//! checked in the user's security stream.
//!
//! One test in this binary: the metrics recorder is the process's, so nothing else may run
//! Redis calls meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{json, TestServer};
use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;
use sha2::{Digest, Sha256};

const KEY: &str = "redis-round-trips-test-key-0123456789";
const PATCHES: u64 = 20;
const TRIPS: &str = "sessiond_engine_redis_round_trips_total";

fn user_stream(user: &str) -> String {
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(user));
    format!("/v1/stream/__security/users/{hash}")
}

/// Round trips so far, by `op`.
async fn round_trips(s: &TestServer) -> BTreeMap<String, u64> {
    let prefix = format!("{TRIPS}{{op=\"");
    common::metrics_text(s)
        .await
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (op, value) = rest.split_once("\"} ")?;
            Some((op.to_string(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The round trips a session change may make (not the relay's, the sweepers' or the
/// subscribers' background work, which runs meanwhile).
fn session_path(op: &str) -> bool {
    let background = op.starts_with("session_sweep")
        || op.starts_with("session_expiry_")
        || op == "session_expire";
    (op.starts_with("session_") && !background) || op == "outbox_index"
}

/// The session round trips between two counts, by `op`.
fn delta<'a>(
    before: &BTreeMap<String, u64>,
    after: &'a BTreeMap<String, u64>,
) -> BTreeMap<&'a str, u64> {
    after
        .iter()
        .map(|(op, n)| (op.as_str(), n - before.get(op).copied().unwrap_or(0)))
        .filter(|(op, n)| *n > 0 && session_path(op))
        .collect()
}

/// Runs `step` and returns the session round trips it made.
async fn counted<F: std::future::Future<Output = ()>>(
    s: &TestServer,
    step: F,
) -> BTreeMap<String, u64> {
    let before = round_trips(s).await;
    step.await;
    let after = round_trips(s).await;
    delta(&before, &after)
        .into_iter()
        .map(|(op, n)| (op.to_string(), n))
        .collect()
}

/// The security events of `kind` in the user's stream, once there are `n`.
async fn events_of(s: &TestServer, user: &str, kind: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let res = s
            .get(&format!("{}?offset=-1", user_stream(user)))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let items: Vec<Value> = match res.status().as_u16() {
            404 => Vec::new(),
            200 => serde_json::from_value(res.json().await.unwrap()).unwrap(),
            other => panic!("reading the user's stream: {other}"),
        };
        let found: Vec<Value> = items.into_iter().filter(|e| e["type"] == kind).collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} {kind} events: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `session.context_changed` events of the user's stream, once there are `n`.
async fn changes(s: &TestServer, user: &str, n: usize) -> Vec<Value> {
    events_of(s, user, "session.context_changed", n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_writes_with_security_events_are_one_redis_round_trip() {
    let redis = RedisServer::start();
    let s = TestServer::start_node(&redis, |c| {
        c.api_keys = vec![KEY.into()];
        assert!(c.security.enabled, "security events are on by default");
    })
    .await;
    let user = "round-trip-user";
    let (status, created) = json(
        s.post("/v1/sessions")
            .bearer_auth(KEY)
            .json(&json!({"user_id": user, "data": {"keep": 1}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/v1/sessions/{id}");

    // Warm up (scripts loaded, the relay has read the outbox once), then count.
    let (status, _) = json(
        s.patch(&path)
            .bearer_auth(KEY)
            .json(&json!({"data": {"warm": true}})),
    )
    .await;
    assert_eq!(status, 200);
    changes(&s, user, 1).await;
    let before = round_trips(&s).await;
    // The data as the client expects it after each change, and the keys each change changed.
    let mut model = BTreeMap::from([("keep".to_string(), json!(1)), ("warm".into(), json!(true))]);
    let mut expected = Vec::new();
    for i in 0..PATCHES {
        let data = json!({format!("k{i}"): i, "keep": 1});
        let mut next = if i % 2 == 0 {
            model.clone()
        } else {
            BTreeMap::new()
        };
        next.extend(serde_json::from_value::<BTreeMap<String, Value>>(data.clone()).unwrap());
        let keys: Vec<&String> = model.keys().chain(next.keys()).collect();
        let mut changed: Vec<String> = keys
            .into_iter()
            .filter(|k| model.get(*k) != next.get(*k))
            .cloned()
            .collect();
        changed.sort();
        changed.dedup();
        expected.push(changed);
        model = next;
        // PATCH (merge) and PUT (replace) of the data, alternately.
        let req = if i % 2 == 0 {
            s.patch(&path)
        } else {
            s.put(&path)
        };
        let (status, body) = json(req.bearer_auth(KEY).json(&json!({ "data": data }))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"], json!(i + 3), "{body}");
        assert_eq!(body["data"], json!(model), "{body}");
    }
    let after = round_trips(&s).await;
    assert_eq!(
        delta(&before, &after),
        BTreeMap::from([("session_update", PATCHES)]),
        "one round trip per change, the update script"
    );

    // A stale If-Match is refused (412) with no event; a matching one is written.
    let stale = s
        .patch(&path)
        .bearer_auth(KEY)
        .header("if-match", "\"2\"")
        .json(&json!({"data": {"stale": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let last = PATCHES + 2;
    let (status, body) = json(
        s.patch(&path)
            .bearer_auth(KEY)
            .header("if-match", format!("\"{last}\""))
            .json(&json!({"data": {"keep": null}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Every change's event, in order: the keys it changed and the version it made.
    let events = changes(&s, user, PATCHES as usize + 2).await;
    assert_eq!(
        events.len(),
        PATCHES as usize + 2,
        "no event for the refusal"
    );
    assert_eq!(events[0]["changed"], json!(["warm"]));
    for i in 0..PATCHES {
        let e = &events[i as usize + 1];
        let changed = json!(expected[i as usize]);
        assert_eq!(e["changed"], changed, "change {i}: {e}");
        assert_eq!(e["version"], json!(i + 3), "{e}");
        assert_eq!(e["session_id"], id.as_str());
        assert_eq!(e["user_id"], user);
        assert!(e["id"].as_str().is_some_and(|v| v.len() >= 22), "{e}");
        assert!(e["at"].as_i64().is_some(), "{e}");
    }
    let e = &events[PATCHES as usize + 1];
    assert_eq!(
        (&e["changed"], &e["version"]),
        (&json!(["keep"]), &json!(last + 1))
    );
    lifecycle_round_trips(&s).await;
    s.stop().await;
}

/// The status of `req`, sent with the key.
async fn status_of(req: reqwest::RequestBuilder) -> u16 {
    req.bearer_auth(KEY).send().await.unwrap().status().as_u16()
}

/// Create, touch, rotate and revoke, each counted: one round trip each, two for a rotation;
/// every one's event reaches the user's stream.
async fn lifecycle_round_trips(s: &TestServer) {
    let user = "lifecycle-user";
    let trips = |ops: &[(&str, u64)]| -> BTreeMap<String, u64> {
        ops.iter().map(|(op, n)| (op.to_string(), *n)).collect()
    };
    let mut id = String::new();
    for round in 0..3 {
        let created = counted(s, async {
            let (status, body) = json(
                s.post("/v1/sessions")
                    .bearer_auth(KEY)
                    .json(&json!({"user_id": user, "data": {"round": round}})),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            id = body["id"].as_str().unwrap().to_string();
        })
        .await;
        assert_eq!(created, trips(&[("session_insert", 1)]), "create {round}");
    }
    let touched = counted(s, async {
        let touch = s.post(&format!("/v1/sessions/{id}/touch"));
        assert_eq!(status_of(touch).await, 204);
    })
    .await;
    assert_eq!(touched, trips(&[("session_touch", 1)]), "touch");
    let mut rotated_id = String::new();
    let rotated = counted(s, async {
        let (status, body) = json(
            s.post(&format!("/v1/sessions/{id}/rotate"))
                .bearer_auth(KEY)
                .json(&json!({})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        rotated_id = body["id"].as_str().unwrap().to_string();
    })
    .await;
    assert_eq!(
        rotated,
        trips(&[("session_get", 1), ("session_rotate", 1)]),
        "rotate: a read for the user's index key, then one script"
    );
    let revoked = counted(s, async {
        let revoke = s.delete(&format!("/v1/sessions/{rotated_id}"));
        assert_eq!(status_of(revoke).await, 204);
    })
    .await;
    assert_eq!(revoked, trips(&[("session_delete", 1)]), "revoke");
    // A stale If-Match is refused by the same script, without an event.
    let others = s
        .get(&format!("/v1/users/{user}/sessions"))
        .bearer_auth(KEY);
    let (status, listed) = json(others).await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        listed.len(),
        2,
        "the revoked session is not listed: {listed:?}"
    );
    assert!(listed.iter().all(|r| r["id"] != rotated_id.as_str()));
    let other = listed[0]["id"].as_str().unwrap();
    let stale = s.delete(&format!("/v1/sessions/{other}"));
    assert_eq!(status_of(stale.header("if-match", "\"9\"")).await, 412);

    // The events, each once, with the facts the scripts filled in.
    assert_eq!(events_of(s, user, "session.created", 3).await.len(), 3);
    let rotation = events_of(s, user, "session.rotated", 1).await;
    assert_eq!(rotation[0]["previous_session_id"], id.as_str());
    let revocation = events_of(s, user, "session.revoked", 1).await;
    assert_eq!(revocation.len(), 1, "no event for the refused delete");
    let e = &revocation[0];
    assert_eq!(e["session_id"], rotated_id.as_str(), "{e}");
    assert_eq!(e["user_id"], user, "{e}");
    assert_eq!(e["reason"], "revoked", "{e}");
}
