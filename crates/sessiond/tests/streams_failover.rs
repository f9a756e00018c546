//! Three real `sessiond` processes on one durable Redis (AOF, `appendfsync always`): `kill -9`
//! of a node while clients append through all of them loses no acknowledged append, an SSE
//! reader of the dead node resumes on another node by offset with nothing lost or doubled, and
//! a Redis crash + restart answers 503 + Retry-After meanwhile (never 500) and then serves
//! every acknowledged append again, without restarting sessiond.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sessiond_engine_redis::testing::RedisServer;

// The real-binary spawner (it needs CARGO_BIN_EXE_sessiond, so it is not part of common/).
#[path = "common/binary.rs"]
mod binary;

use binary::Binary;

const STREAM: &str = "/v1/stream/failover/log";
const WRITERS: usize = 6;
const APPENDS: usize = 40;

/// A `sessiond serve` process on the Redis engine (killed, SIGKILL, on drop).
fn spawn_node(redis: &RedisServer) -> Binary {
    Binary::spawn_on_redis(&redis.url(), &["--long-poll-timeout-ms", "500"], &[])
}

/// Follows the stream over SSE from `urls[0]`, moving to the next URL (from the last offset a
/// control event confirmed) whenever a connection ends; returns the data once it has `want`
/// bytes.
async fn follow(
    http: reqwest::Client,
    urls: Vec<String>,
    done: Arc<Mutex<Option<usize>>>,
) -> String {
    let mut data = String::new();
    let mut offset = "-1".to_owned();
    let mut node = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if done.lock().unwrap().is_some_and(|want| data.len() >= want) {
            return data;
        }
        assert!(Instant::now() < deadline, "reader did not catch up");
        let url = format!("{}?offset={offset}&live=sse", urls[node % urls.len()]);
        let Ok(mut res) = http.get(&url).send().await else {
            node += 1; // that node is gone: resume on the next one
            continue;
        };
        let mut buf = String::new();
        let mut pending = String::new();
        while let Ok(Some(chunk)) = res.chunk().await {
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let payload: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .collect();
                if event.starts_with("event: data") {
                    pending = payload.join("\n");
                } else if event.starts_with("event: control") {
                    // Data counts once its control (with the offset after it) arrived.
                    let c: Value = serde_json::from_str(&payload.join("")).unwrap();
                    data.push_str(&std::mem::take(&mut pending));
                    offset = c["streamNextOffset"].as_str().unwrap().to_owned();
                }
            }
            if done.lock().unwrap().is_some_and(|want| data.len() >= want) {
                return data;
            }
        }
        node += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_a_node_and_a_redis_restart_lose_no_acknowledged_append() {
    let mut redis = RedisServer::start_durable();
    let mut nodes: Vec<Option<Binary>> = (0..3).map(|_| Some(spawn_node(&redis))).collect();
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().url(STREAM))
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = http
        .put(&urls[0])
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // A reader on the node that will die.
    let want: Arc<Mutex<Option<usize>>> = Arc::default();
    let reader = tokio::spawn(follow(
        http.clone(),
        vec![urls[1].clone(), urls[2].clone(), urls[0].clone()],
        want.clone(),
    ));

    let acked_count = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (http, urls) = (http.clone(), urls.clone());
        let (acked, acked_count) = (acked.clone(), acked_count.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..APPENDS {
                let token = format!("<{w}-{n:03}>");
                let url = &urls[(w + n) % urls.len()];
                let sent = http
                    .post(url)
                    .header("content-type", "text/plain")
                    .body(token.clone())
                    .send()
                    .await;
                if let Ok(res) = sent {
                    if res.status() == 204 {
                        acked.lock().unwrap().push(token);
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // kill -9 node 1 once a third of the appends were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_count.load(Ordering::Relaxed) < WRITERS * APPENDS / 3 {
        assert!(Instant::now() < deadline, "appends did not progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(nodes[1].take());
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > WRITERS * APPENDS / 2,
        "survivors kept serving"
    );

    let read_all = |url: String| {
        let http = http.clone();
        async move {
            let res = http.get(format!("{url}?offset=-1")).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.text().await.unwrap()
        }
    };
    let body = read_all(urls[0].clone()).await;
    for token in &acked {
        assert_eq!(
            body.matches(token.as_str()).count(),
            1,
            "{token} exactly once"
        );
    }
    assert_eq!(
        body.matches('<').count() * 7,
        body.len(),
        "whole appends only"
    );

    // The reader of the dead node resumed elsewhere and saw exactly the stream.
    *want.lock().unwrap() = Some(body.len());
    let followed = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("reader finished")
        .unwrap();
    assert_eq!(followed, body, "resumed by offset: nothing lost or doubled");

    // Redis crashes: requests answer 503 + Retry-After (never 500), then service resumes.
    redis.kill9();
    let res = http
        .post(&urls[2])
        .header("content-type", "text/plain")
        .body("<x-000>")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let res = http
            .get(format!("{}?offset=-1", urls[2]))
            .send()
            .await
            .unwrap();
        match res.status().as_u16() {
            200 => break res.text().await.unwrap(),
            503 => assert!(Instant::now() < deadline, "service did not resume"),
            other => panic!("unexpected status {other} while Redis restarts"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        after, body,
        "every acknowledged append survived the Redis crash"
    );
    // Every node serves again (a node's first call on its broken connection may still be a
    // 503 while it reconnects).
    for url in [&urls[0], &urls[2]] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let res = http.get(format!("{url}?offset=-1")).send().await.unwrap();
            match res.status().as_u16() {
                200 => {
                    assert_eq!(res.text().await.unwrap(), body);
                    break;
                }
                503 => assert!(Instant::now() < deadline, "{url} did not resume"),
                other => panic!("unexpected status {other} while Redis restarts"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let res = http
        .post(&urls[0])
        .header("content-type", "text/plain")
        .body("<y-000>")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        204,
        "appends work again without a sessiond restart"
    );
}
