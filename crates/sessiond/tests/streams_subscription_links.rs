//! Bytes written to disk by stream creates under a pattern subscription stay near those
//! without one: links are their own small objects, not a record rewritten per new stream
//! (which made 3,000 creates write 8.8 GB). Measured from `/proc/self/io` `write_bytes` of
//! this process (the server runs in it); this file holds a single test so nothing else
//! writes meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{json, TestServer};
use serde_json::json as j;
use sessiond::config::EngineKind;

const KEY: &str = "subscription-links-test-api-key";
const STREAMS: usize = 3_000;

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Bytes written while creating `STREAMS` streams with a body under `t/`, with or without
/// a pull-wake subscription on `t/*`. Also returns how many links the subscription holds.
async fn creates(subscribed: bool) -> (u64, usize) {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![KEY.into()];
    })
    .await;
    let put = |path: String| {
        s.put(&format!("/v1/stream/{path}"))
            .bearer_auth(KEY)
            .header("content-type", "text/plain")
            .body("event")
    };
    assert!(put("wakes".into())
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    if subscribed {
        let sub = j!({"type": "pull-wake", "pattern": "t/*", "wake_stream": "wakes", "lease_ttl_ms": 600000});
        let (status, body) = json(
            s.put("/v1/stream/__ds/subscriptions/all")
                .bearer_auth(KEY)
                .json(&sub),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let before = write_bytes();
    for i in 0..STREAMS {
        let res = put(format!("t/{i:05}")).send().await.unwrap();
        assert!(res.status().is_success());
    }
    let mut links = 0;
    if subscribed {
        // Every create was linked (the subscription task keeps up), then measure.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (_, view) = json(s.get("/v1/stream/__ds/subscriptions/all").bearer_auth(KEY)).await;
            links = view["streams"].as_array().map_or(0, Vec::len);
            if links == STREAMS {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{links} links");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let written = write_bytes() - before;
    s.stop().await;
    (written, links)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscription_keeps_stream_creates_near_the_baseline() {
    let (baseline, _) = creates(false).await;
    let (subscribed, links) = creates(true).await;
    assert_eq!(links, STREAMS);
    eprintln!("{STREAMS} creates wrote {baseline} bytes alone, {subscribed} with a subscription");
    assert!(
        subscribed < 3 * baseline,
        "{STREAMS} creates wrote {subscribed} bytes with a pattern subscription, {baseline} without"
    );
}
