//! Names of the maximum length (1 KiB) through a real listener with the default cold tier (a
//! local directory): create, append, seal, read across the seal, delete and expire all work,
//! and an expired stream of any name is swept along with the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestServer;
use sessiond::config::{Config, EngineKind};

/// Segment files under `dir` (any depth).
fn segment_files(dir: &Path) -> usize {
    let mut count = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "seg") {
                count += 1;
            }
        }
    }
    count
}

/// Polls `check` every 50 ms until it holds, or panics after 30 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn eager_cold(c: &mut Config, data_dir: &mut PathBuf) {
    let cold = &mut c.streams.cold;
    cold.min_segment_bytes = 100;
    cold.keep_hot_bytes = 0;
    cold.max_age_s = 0;
    cold.interval_s = 1;
    c.streams.sweep_interval_s = 1;
    *data_dir = c.data_dir.clone();
}

/// A name of exactly `max_name_bytes` (the default, 1024) under `prefix`.
fn longest(prefix: &str, c: char) -> String {
    let name = format!("{prefix}/{}", c.to_string().repeat(1023 - prefix.len()));
    assert_eq!(name.len(), 1024);
    name
}

async fn put(s: &TestServer, name: &str, ttl: Option<&str>) {
    let mut req = s
        .put(&format!("/v1/stream/{name}"))
        .header("content-type", "text/plain");
    if let Some(ttl) = ttl {
        req = req.header("stream-ttl", ttl);
    }
    assert_eq!(req.send().await.unwrap().status(), 201);
}

async fn append(s: &TestServer, name: &str, body: String) {
    let res = s
        .post(&format!("/v1/stream/{name}"))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}

async fn get(s: &TestServer, name: &str) -> (u16, String) {
    let res = s
        .get(&format!("/v1/stream/{name}?offset=-1"))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_names_create_append_seal_read_and_delete() {
    let mut data_dir = PathBuf::new();
    let s = TestServer::start(EngineKind::Sqlite, |c| eager_cold(c, &mut data_dir)).await;
    let segments = data_dir.join("segments");
    let name = longest("long", 'x');
    put(&s, &name, None).await;
    let (first, second) = ("a".repeat(600), "b".repeat(600));
    append(&s, &name, first.clone()).await;
    append(&s, &name, second.clone()).await;
    eventually("a segment is sealed", || segment_files(&segments) > 0).await;
    assert_eq!(get(&s, &name).await, (200, format!("{first}{second}")));
    let res = s
        .delete(&format!("/v1/stream/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(get(&s, &name).await.0, 404);
    assert_eq!(segment_files(&segments), 0, "its segments are deleted");
    // The path can be used again.
    put(&s, &name, None).await;
    assert_eq!(get(&s, &name).await, (200, String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_streams_with_longest_names_are_removed_and_do_not_block_the_sweep() {
    let mut data_dir = PathBuf::new();
    let s = TestServer::start(EngineKind::Sqlite, |c| eager_cold(c, &mut data_dir)).await;
    let segments = data_dir.join("segments");
    // The long-named stream expires first, so a sweep that stopped at it would never reach
    // the short-named one.
    let (long, short) = (longest("exp", 'y'), "exp/short".to_string());
    put(&s, &long, Some("5")).await;
    put(&s, &short, Some("6")).await;
    for name in [&long, &short] {
        append(&s, name, "z".repeat(600)).await;
    }
    eventually("both streams have a sealed segment", || {
        segment_files(&segments) >= 2
    })
    .await;
    // Nothing touches them: only the sweeper can remove them and their segments.
    eventually("the sweeper removed both streams' segments", || {
        segment_files(&segments) == 0
    })
    .await;
    assert_eq!(get(&s, &long).await.0, 404);
    assert_eq!(get(&s, &short).await.0, 404);

    // An expired long-named stream found by a request (lazy expiry) is a 404 too, and the
    // name can be created again at once.
    let lazy = longest("lazy", 'w');
    put(&s, &lazy, Some("5")).await;
    append(&s, &lazy, "q".repeat(600)).await;
    eventually("sealed", || segment_files(&segments) >= 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let res = s
            .http
            .head(s.url(&format!("/v1/stream/{lazy}")))
            .send()
            .await
            .unwrap();
        if res.status() == 404 {
            break;
        }
        assert_eq!(res.status(), 200, "before expiry");
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    put(&s, &lazy, None).await;
}
