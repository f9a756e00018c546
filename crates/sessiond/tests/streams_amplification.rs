//! One JSON append cannot amplify (issue 20, item 2), measured on the real binary on SQLite,
//! from `/proc/<pid>/status` and the data directory:
//! - a `max_append_bytes` body of `[0,0,…]` is a 413 (more than `max_messages_per_append`);
//! - the largest append the limits admit (`max_messages_per_append` messages filling
//!   `max_append_bytes` with the per-message overhead) peaks below 4× its size in RSS over the
//!   idle server, stalls a concurrent session create less than 200 ms, and stores less than 2×
//!   its size (SQLite after a clean stop; the cold segments once sealed);
//! - 8 concurrent catch-up readers of it, from the hot log and from the cold tier, keep the
//!   server below 256 MiB of peak RSS.
//!
//! Scale: `cargo test` runs the debug build, whose bundled SQLite is compiled without
//! optimization, so by default the limits are scaled down by 4 (`AMPLIFICATION_MIB`, default 4:
//! `max_append_bytes` = 4 MiB, `max_messages_per_append` = 25,000, 1 MiB pages), keeping every
//! ratio (overhead per message, messages per byte, page per append). The full defaults (16 MiB,
//! 100,000 messages, 4 MiB pages) are measured with the release build:
//! `TEST_SESSIOND_BIN=target/release/sessiond AMPLIFICATION_MIB=16 cargo test -p sessiond
//! --test streams_amplification -- --nocapture` (figures in docs/benchmarks.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
// The real-binary spawner needs CARGO_BIN_EXE_sessiond, which only this crate's tests have
// (common/ is also compiled into other crates' tests), so it is included here, not in common.
#[path = "common/binary.rs"]
mod binary;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use binary::{dir_bytes, Binary};

const MIB: u64 = 1 << 20;

/// The limits of this run: (max_append_bytes, max_messages_per_append, max_read_chunk_bytes).
fn scale() -> (u64, usize, u64) {
    let mib: u64 = std::env::var("AMPLIFICATION_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    (mib * MIB, 100_000 * mib as usize / 16, mib * MIB / 4)
}

fn limits_env() -> Vec<(&'static str, String)> {
    let (bytes, messages, page) = scale();
    vec![
        ("SESSIOND_STREAMS__MAX_APPEND_BYTES", bytes.to_string()),
        (
            "SESSIOND_STREAMS__MAX_MESSAGES_PER_APPEND",
            messages.to_string(),
        ),
        ("SESSIOND_STREAMS__MAX_READ_CHUNK_BYTES", page.to_string()),
    ]
}

/// The largest body the limits admit: the most messages, 16 bytes of overhead each, all
/// within `max_append_bytes`.
fn largest_body() -> Vec<u8> {
    let (bytes, messages, _) = scale();
    let budget = bytes as usize - messages * 16;
    let len = (budget - 2 - (messages - 1)) / messages;
    let message = format!("\"{}\"", "x".repeat(len - 2));
    format!("[{}]", vec![message; messages].join(",")).into_bytes()
}

/// Creates sessions back to back until `stop`; returns the slowest create.
async fn session_creates(base: String, stop: Arc<AtomicBool>) -> (Duration, usize) {
    let http = reqwest::Client::new();
    let (mut worst, mut n) = (Duration::ZERO, 0);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let res = http
            .post(format!("{base}/v1/sessions"))
            .json(&serde_json::json!({"user_id": "u", "data": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        worst = worst.max(started.elapsed());
        n += 1;
    }
    (worst, n)
}

/// 8 concurrent catch-up readers of the whole stream; each checks it read every message.
async fn readers(base: &str) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = format!("{base}/v1/stream/big");
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut at, mut messages) = ("-1".to_string(), 0usize);
            loop {
                let res = http.get(format!("{url}?offset={at}")).send().await.unwrap();
                assert_eq!(res.status(), 200);
                let done = res.headers().contains_key("stream-up-to-date");
                at = res.headers()["stream-next-offset"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let body = res.bytes().await.unwrap();
                assert!(body.len() as u64 <= scale().2 + 200, "pages stay bounded");
                if body.len() > 2 {
                    messages += 1 + body.iter().filter(|&&b| b == b',').count();
                }
                if done {
                    return messages;
                }
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), scale().1);
    }
}

fn segment_bytes(dir: &std::path::Path) -> u64 {
    dir_bytes(&dir.join("segments"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_largest_json_append_is_bounded_in_memory_stall_and_storage() {
    let dir = tempfile::tempdir().unwrap();
    let mut hot_only = limits_env();
    hot_only.push(("SESSIOND_STREAMS__COLD__ENABLED", "false".to_string()));
    let server = Binary::spawn(dir.path(), &hot_only);
    let http = reqwest::Client::new();
    let url = server.url("/v1/stream/big");
    let res = http
        .put(&url)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // The amplification attack itself: refused before anything is stored.
    let zeros = format!("[{}0]", "0,".repeat((scale().0 as usize - 3) / 2));
    let res = http
        .post(&url)
        .header("content-type", "application/json")
        .body(zeros)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    // The largest admitted append, with session creates running alongside.
    let body = largest_body();
    let size = body.len() as u64;
    assert!(size > scale().0 * 7 / 8, "close to max_append_bytes");
    let (stop, base) = (Arc::new(AtomicBool::new(false)), server.base.clone());
    let creates = tokio::spawn(session_creates(base, stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The baseline is taken once the creates are warm (their security events relayed into the
    // user's and the global stream), so the growth below is the append's own.
    let idle_rss = server.status_kib("VmRSS") * 1024;
    let started = Instant::now();
    let res = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let append_took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (worst, n) = creates.await.unwrap();
    let peak = server.status_kib("VmHWM") * 1024;
    eprintln!(
        "append of {size} B took {append_took:?}; RSS idle {idle_rss} B, peak {peak} B; \
         {n} session creates, slowest {worst:?}"
    );
    assert!(n > 5, "session creates ran alongside");
    assert!(
        peak - idle_rss < 4 * size,
        "peak RSS grew {} B for a {size} B append",
        peak - idle_rss
    );
    assert!(
        worst < Duration::from_millis(200),
        "a session create waited {worst:?}"
    );

    readers(&server.base).await;
    let peak = server.status_kib("VmHWM") * 1024;
    eprintln!("8 hot readers: peak RSS {peak} B");
    assert!(peak < 256 * MIB, "peak RSS {peak} B with 8 hot readers");

    server.stop();
    let stored = dir_bytes(dir.path());
    eprintln!("stored after a clean stop: {stored} B");
    assert!(stored < 2 * size, "{stored} B stored for {size} B");

    // Sealed into the cold tier: segments < 2x, and 8 cold readers < 256 MiB.
    let mut fast = limits_env();
    fast.extend([
        ("SESSIOND_STREAMS__COLD__INTERVAL_S", "1".to_string()),
        ("SESSIOND_STREAMS__COLD__MAX_AGE_S", "0".to_string()),
        (
            "SESSIOND_STREAMS__COLD__MIN_SEGMENT_BYTES",
            (scale().0 / 4).to_string(),
        ),
        (
            "SESSIOND_STREAMS__COLD__MAX_SEGMENT_BYTES",
            (scale().0 / 2).to_string(),
        ),
    ]);
    let server = Binary::spawn(dir.path(), &fast);
    let deadline = Instant::now() + Duration::from_secs(120);
    while segment_bytes(dir.path()) < size * 15 / 16 {
        assert!(Instant::now() < deadline, "the append was not sealed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sealed = segment_bytes(dir.path());
    assert!(sealed < 2 * size, "{sealed} B of segments for {size} B");
    let before = server.status_kib("VmHWM") * 1024;
    readers(&server.base).await;
    let peak = server.status_kib("VmHWM") * 1024;
    eprintln!("segments {sealed} B; 8 cold readers: peak RSS {peak} B (before {before} B)");
    assert!(peak < 256 * MIB, "peak RSS {peak} B with 8 cold readers");
    server.stop();
}
