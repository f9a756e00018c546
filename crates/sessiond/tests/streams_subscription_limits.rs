//! `__ds` subscriptions under hostile input, over a real server: an adversarial glob answers
//! at once, pattern / path depth / link counts are capped with 400s, and a webhook receiver
//! can neither make the server read a huge answer nor hold a delivery open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::routing::post;
use common::{assert_error, counter, json, TestServer};
use serde_json::{json as j, Value};
use sessiond::config::{Config, EngineKind};

const KEY: &str = "subscription-limits-test-api-key";

fn keyed(c: &mut Config) {
    c.api_keys = vec![KEY.into()];
    c.streams.allow_insecure_webhooks = true;
}

async fn create_stream(s: &TestServer, path: &str) {
    let res = s
        .put(&format!("/v1/stream/{path}"))
        .bearer_auth(KEY)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "create {path}: {}", res.status());
}

async fn append(s: &TestServer, path: &str, body: &str) {
    let res = s
        .post(&format!("/v1/stream/{path}"))
        .bearer_auth(KEY)
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "append {path}: {}", res.status());
}

async fn put_sub(s: &TestServer, id: &str, body: Value) -> (u16, Value) {
    json(
        s.put(&format!("/v1/stream/__ds/subscriptions/{id}"))
            .bearer_auth(KEY)
            .json(&body),
    )
    .await
}

async fn get_sub(s: &TestServer, id: &str) -> Value {
    let (status, body) = json(
        s.get(&format!("/v1/stream/__ds/subscriptions/{id}"))
            .bearer_auth(KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adversarial_glob_answers_at_once() {
    let s = TestServer::start(EngineKind::Sqlite, keyed).await;
    create_stream(&s, "wakes").await;
    let deep = vec!["s"; 40].join("/");
    create_stream(&s, &deep).await;
    let pattern = format!("{}nomatch", "**/".repeat(18));
    let sub = j!({"type": "pull-wake", "pattern": pattern, "wake_stream": "wakes"});
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    // The backfill matches the pattern against the 40-segment stream.
    let res = http
        .put(s.url("/v1/stream/__ds/subscriptions/evil"))
        .bearer_auth(KEY)
        .json(&sub)
        .send()
        .await
        .expect("the PUT answers");
    assert_eq!(res.status(), 201);
    // Appends to the deep stream are matched on the subscription task; it keeps answering.
    append(&s, &deep, "x").await;
    let view = get_sub(&s, "evil").await;
    assert_eq!(view["streams"], j!([]));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    s.stop().await;
}

#[tokio::test]
async fn pattern_depth_and_link_counts_are_capped() {
    // Redis: the shared-engine path, which counts links in the store.
    for engine in [EngineKind::Memory, EngineKind::Redis] {
        links_are_capped(engine).await;
    }
}

async fn links_are_capped(engine: EngineKind) {
    let s = TestServer::start(engine, |c| {
        keyed(c);
        c.streams.subscriptions.max_links = 3;
        c.streams.subscriptions.max_path_segments = 4;
        c.streams.subscriptions.max_pattern_segments = 3;
    })
    .await;
    create_stream(&s, "wakes").await;
    let pull =
        |pattern: &str| j!({"type": "pull-wake", "pattern": pattern, "wake_stream": "wakes"});
    let (status, body) = put_sub(&s, "long", pull("a/b/c/d")).await;
    assert_error(status, &body, 400, "pattern over max_pattern_segments");
    let explicit = j!({"type": "pull-wake", "streams": ["a/b/c/d/e"], "wake_stream": "wakes"});
    let (status, body) = put_sub(&s, "deep", explicit).await;
    assert_error(status, &body, 400, "stream path over max_path_segments");

    for i in 0..3 {
        create_stream(&s, &format!("c/{i}")).await;
    }
    let (status, body) = put_sub(&s, "capped", pull("c/*")).await;
    assert_eq!(status, 201, "{body}");
    // A fourth matching stream is not linked (counted), the subscription stays as it was.
    let refused = counter(&s, "sessiond_streams_subscription_links_refused_total").await;
    create_stream(&s, "c/3").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&s, "sessiond_streams_subscription_links_refused_total").await < refused + 1.0 {
        assert!(
            Instant::now() < deadline,
            "the fourth link was never refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get_sub(&s, "capped").await["streams"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (status, body) = json(
        s.post("/v1/stream/__ds/subscriptions/capped/streams")
            .bearer_auth(KEY)
            .json(&j!({"streams": ["other"]})),
    )
    .await;
    assert_error(status, &body, 400, "explicit link over max_links");
    // A pattern that already matches more than max_links streams is refused at PUT.
    let (status, body) = put_sub(&s, "too-many", pull("c/*")).await;
    assert_error(status, &body, 400, "backfill over max_links");
    s.stop().await;
}

/// A loopback receiver answering every webhook with `answer` after `delay`; returns its port.
async fn receiver(answer: String, delay: Duration) -> u16 {
    let app = axum::Router::new().route(
        "/hook",
        post(move || {
            let answer = answer.clone();
            async move {
                tokio::time::sleep(delay).await;
                ([("content-type", "application/json")], answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// Waits until the subscription's status is `failed` (its delivery was refused).
async fn wait_failed(s: &TestServer, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let view = get_sub(s, id).await;
        if view["status"] == "failed" {
            return view;
        }
        assert!(Instant::now() < deadline, "delivery never failed: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_are_bounded_in_size_and_time() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        keyed(c);
        c.streams.subscriptions.webhook_timeout_ms = 500;
    })
    .await;
    // A receiver that says "done" inside a 1 MiB answer: over the 64 KiB cap, so the
    // delivery failed and nothing was acked. (`localhost`: through the checked resolver.)
    let huge = j!({"done": true, "pad": "x".repeat(1 << 20)}).to_string();
    let port = receiver(huge, Duration::ZERO).await;
    let hook = format!("http://localhost:{port}/hook");
    let (status, body) = put_sub(
        &s,
        "big",
        j!({"type": "webhook", "pattern": "big/*", "webhook": {"url": hook}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    create_stream(&s, "big/a").await;
    append(&s, "big/a", "data").await;
    let view = wait_failed(&s, "big", Duration::from_secs(10)).await;
    let tail = s
        .http
        .head(s.url("/v1/stream/big/a"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(view["streams"][0]["acked_offset"], tail.as_str(), "{view}");

    // A receiver that holds the request: the delivery fails after webhook_timeout_ms.
    let port = receiver("{}".into(), Duration::from_secs(60)).await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    let (status, body) = put_sub(
        &s,
        "slow",
        j!({"type": "webhook", "pattern": "slow/*", "webhook": {"url": hook}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    create_stream(&s, "slow/a").await;
    let started = Instant::now();
    append(&s, "slow/a", "data").await;
    wait_failed(&s, "slow", Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_change_queue_is_caught_up_by_a_rescan() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        keyed(c);
        c.streams.subscriptions.observer_queue = 1;
    })
    .await;
    create_stream(&s, "wakes").await;
    let sub = j!({"type": "pull-wake", "pattern": "q/*", "wake_stream": "wakes"});
    assert_eq!(put_sub(&s, "q", sub).await.0, 201);
    // Creates from 8 clients at once overflow a one-change queue.
    const N: usize = 200;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let http = s.http.clone();
            let base = s.url("/v1/stream/q/");
            tokio::spawn(async move {
                for i in (t..N).step_by(8) {
                    let res = http
                        .put(format!("{base}{i}"))
                        .bearer_auth(KEY)
                        .header("content-type", "text/plain")
                        .body("x")
                        .send()
                        .await
                        .unwrap();
                    assert!(res.status().is_success());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let links = get_sub(&s, "q").await["streams"].as_array().unwrap().len();
        if links == N {
            break;
        }
        assert!(Instant::now() < deadline, "{links} of {N} streams linked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counter(&s, "sessiond_streams_subscription_resyncs_total").await >= 1.0);
    s.stop().await;
}
