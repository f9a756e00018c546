//! A shutdown does not wait for the background sweeper to finish a pass over many streams
//! while the engine does not answer.
//!
//! Found by CI: a node of the 3-node conformance cluster, stopped after Redis, was in a
//! retention pass over the suite's streams; each stream's step waited for its connection
//! attempt, so "draining background work" lasted for minutes. The sweeper now stops between
//! (or inside) its steps when the server stops, and the whole drain of background work is
//! bounded by `http.shutdown_grace_s` (here 2 s; other tasks may each be inside one engine
//! call that waits for its 10 s reply timeout).

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::{Duration, Instant};

use sessiond_engine_redis::testing::RedisServer;

#[path = "common/binary.rs"]
mod binary;

use binary::Binary;

fn redis_cli(redis: &RedisServer, args: &[&str]) {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
}

#[tokio::test]
async fn a_sweep_stuck_on_the_engine_does_not_hold_the_shutdown() {
    let redis = RedisServer::start();
    // The first pass comes 5 s after the start, over every stream in one batch.
    let env = [
        ("SESSIOND_STREAMS__SWEEP_INTERVAL_S", "5".to_string()),
        (
            "SESSIOND_STREAMS__RETENTION_SWEEP_BATCH",
            "1000".to_string(),
        ),
        ("SESSIOND_HTTP__SHUTDOWN_GRACE_S", "2".to_string()),
        // No security relay: its lease script (a write, every second) would wait on the
        // paused server at the head of the node's one multiplexed connection, so the sweep's
        // listing (a read) would time out behind it instead of the pass reaching its trims.
        ("SESSIOND_SECURITY__ENABLED", "false".to_string()),
    ];
    let mut node = Binary::spawn_on_redis(&redis.url(), &[], &env);
    let http = reqwest::Client::new();
    // Streams whose retention wants a trim (a write), so a pass lists them (a read) and then
    // blocks on each one's trim.
    for i in 0..20 {
        let url = node.url(&format!("/v1/stream/sweep/s{i}"));
        let created = http
            .put(&url)
            .header("content-type", "application/octet-stream")
            .header("stream-retention-max-bytes", "1")
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{}", created.status());
        for body in ["first", "second"] {
            let appended = http
                .post(&url)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(appended.status().is_success(), "{}", appended.status());
        }
    }
    // Writes (scripts included) now wait; each trim gives up only after the engine's reply
    // timeout (10 s): a pass over 20 streams would take minutes.
    redis_cli(&redis, &["CLIENT", "PAUSE", "600000", "WRITE"]);
    node.logs.wait_for_within(
        "a trim of the sweep failing",
        Duration::from_secs(30),
        |e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cannot apply retention"))
        },
    );
    let stopping = Instant::now();
    node.terminate();
    let exited = node.exited_by(stopping + Duration::from_secs(20));
    redis_cli(&redis, &["CLIENT", "UNPAUSE"]);
    assert!(
        exited.is_some(),
        "the server still ran 20 s after SIGTERM (a sweep pass held the shutdown); last lines: {:#?}",
        node.logs.lines().iter().rev().take(12).collect::<Vec<_>>()
    );
}
