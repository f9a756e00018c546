//! Durable Streams extras through a real listener: Prometheus metrics, the system metrics
//! stream, `Server-Timing`, and the configurable limits with their 4xx/503 answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use sessiond::config::EngineKind;

async fn put(s: &TestServer, url: &str) -> u16 {
    s.put(url)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn metrics_and_debug_timing() {
    // The metrics stream is server-owned: streams stay open, but only the service key reads it.
    const SERVICE: &str = "service-key-0123456789";
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.streams.long_poll_timeout_ms = 200;
        c.streams.metrics_stream = Some("_system/metrics".into());
        c.streams.metrics_interval_s = 1;
        c.api_keys = vec![SERVICE.into()];
        c.open_routes = vec![sessiond::config::RouteSet::Streams];
    })
    .await;
    assert_eq!(put(&s, "/v1/stream/m/one").await, 201);
    let res = s
        .post("/v1/stream/m/one")
        .header("content-type", "text/plain")
        .header("x-debug-timing", "1")
        .body("x".repeat(300))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let timing = res.headers()["server-timing"].to_str().unwrap();
    assert!(
        timing.starts_with("app;") && timing.contains("dur="),
        "{timing}"
    );
    let res = s.get("/v1/stream/m/one?offset=-1").send().await.unwrap();
    assert!(
        !res.headers().contains_key("server-timing"),
        "only on request"
    );
    // A long-poll at the tail: subscribe + unsubscribe.
    let res = s
        .get("/v1/stream/m/one?offset=now&live=long-poll")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);

    let text = s
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "sessiond_streams_appends_total{producer=\"anonymous\"}",
        "sessiond_streams_append_bytes_total",
        "sessiond_streams_append_bytes_bucket{le=\"1024\"}",
        "sessiond_streams_subscribe_total{mode=\"long_poll\"}",
        "sessiond_streams_unsubscribe_total{mode=\"long_poll\"}",
        "sessiond_streams_live_open{mode=\"long_poll\"}",
    ] {
        assert!(text.contains(needle), "{needle} in /metrics:\n{text}");
    }
    assert!(
        !text.contains("m/one"),
        "no per-stream label in the metrics"
    );

    // The system stream receives snapshots, readable with the protocol.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let res = s
        .get("/v1/stream/_system/metrics?offset=-1")
        .bearer_auth(SERVICE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let values: Vec<serde_json::Value> = res.json().await.unwrap();
    assert!(!values.is_empty());
    assert!(values[0]["appends"].as_u64().unwrap() >= 1, "{values:?}");
    assert!(values[0]["ts"].is_number());
    s.stop().await;
}

#[tokio::test]
async fn limits_answer_clearly() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        c.streams.long_poll_timeout_ms = 1_500;
        c.streams.max_append_bytes = 1_000;
        c.streams.max_name_bytes = 40;
        c.streams.max_long_polls = 1;
        c.streams.max_streams_per_prefix = 2;
    })
    .await;
    // Body size: 413.
    assert_eq!(put(&s, "/v1/stream/a/log").await, 201);
    let res = s
        .post("/v1/stream/a/log")
        .header("content-type", "text/plain")
        .body("x".repeat(1_001))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // Name length and charset: 400.
    assert_eq!(
        put(&s, &format!("/v1/stream/a/{}", "n".repeat(40))).await,
        400
    );
    assert_eq!(
        put(&s, "/v1/stream/a/%0Abad").await,
        201,
        "percent-encoded is verbatim"
    );
    assert_eq!(put(&s, "/v1/stream/b//x").await, 400);
    // Stream count per prefix: 429, other prefixes unaffected, deleting frees a slot.
    assert_eq!(put(&s, "/v1/stream/a/third").await, 429);
    let res = s
        .put("/v1/stream/a/third")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "stream_quota_exceeded");
    assert_eq!(
        put(&s, "/v1/stream/a/log").await,
        200,
        "re-create is not a new stream"
    );
    assert_eq!(put(&s, "/v1/stream/b/one").await, 201);
    assert_eq!(
        s.delete("/v1/stream/a/log").send().await.unwrap().status(),
        204
    );
    assert_eq!(put(&s, "/v1/stream/a/third").await, 201);
    // Open long-polls: the second waiter gets 503 + Retry-After.
    let url = s.url("/v1/stream/b/one?offset=now&live=long-poll");
    let first = tokio::spawn(reqwest::get(url.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = s.http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(first.await.unwrap().unwrap().status(), 204);
    s.stop().await;
}
