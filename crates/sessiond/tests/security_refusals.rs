//! Refused requests reach the global security stream as summaries through a real listener:
//! a flood of 401s becomes a few `request.refused` events (one per `refused_summary_ms` at
//! most), whose counts per route class add up to the refusals, with no user and no address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{json, TestServer};
use sessiond::config::EngineKind;

const KEY: &str = "security-refusals-test-key-0123456789";
const INTERVAL_MS: u64 = 300;

/// The `request.refused` events of the global stream.
async fn summaries(s: &TestServer) -> Vec<serde_json::Value> {
    let (status, body) = json(
        s.get("/v1/stream/__security/all?offset=-1")
            .bearer_auth(KEY),
    )
    .await;
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{body}");
    let items = body.as_array().unwrap().clone();
    items
        .into_iter()
        .filter(|e| e["type"] == "request.refused")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_refused_requests_become_a_few_summaries_that_add_up() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![KEY.into()];
        c.security.refused_summary_ms = INTERVAL_MS;
    })
    .await;
    let started = Instant::now();
    for round in 0..20 {
        let mut batch = Vec::new();
        for i in 0..50 {
            let request = match (round * 50 + i) % 5 {
                // 400 of 1000: a users route with a wrong key.
                0 | 1 => s.get("/v1/users/someone/devices").bearer_auth("wrong-key"),
                // 600: a session create without any credential.
                _ => s.post("/v1/sessions").json(&serde_json::json!({})),
            };
            batch.push(tokio::spawn(request.send()));
        }
        for r in batch {
            assert_eq!(r.await.unwrap().unwrap().status(), 401);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = summaries(&s).await;
        let total: u64 = events.iter().map(|e| e["total"].as_u64().unwrap()).sum();
        if total >= 1000 {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "{total} of 1000 refusals summarized"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // At most one summary per interval (plus the partial ones at both ends).
    let intervals = started.elapsed().as_millis() as u64 / INTERVAL_MS;
    assert!(
        events.len() as u64 <= intervals + 2 && events.len() < 100,
        "{} summaries in {intervals} intervals",
        events.len()
    );
    let mut per_class: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        assert!(e["user_ref"].is_null() && e["session_id"].is_null(), "{e}");
        assert!(e["since"].as_u64().unwrap() <= e["until"].as_u64().unwrap());
        let rows = e["counts"].as_array().unwrap();
        let sum: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
        assert_eq!(sum, e["total"].as_u64().unwrap(), "{e}");
        for r in rows {
            assert_eq!(r["status"], 401);
            assert_eq!(r["reason"], "unauthenticated");
            let class = r["class"].as_str().unwrap().to_string();
            *per_class.entry(class).or_default() += r["count"].as_u64().unwrap();
        }
        let text = e.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("someone"),
            "{e}"
        );
    }
    let want = BTreeMap::from([("sessions".to_string(), 600), ("users".to_string(), 400)]);
    assert_eq!(per_class, want);
    s.stop().await;
}
