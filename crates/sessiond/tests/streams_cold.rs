//! Durable Streams cold tier through a real listener: with a tiny compaction policy, the
//! server's compactor seals most of a stream into segment objects (a local directory, or a
//! real S3-compatible server: moto), and catch-up reads from every kind of offset (inside
//! cold, at the cold/hot boundary, in hot) return exactly what they returned before. Deleting
//! (or expiring) a stream removes its segment objects. Two nodes on one Redis sharing the
//! segment directory seal one at a time (the engine's sealing lease) and read the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestServer;
use sessiond::config::{Config, EngineKind};
use sessiond_engine_redis::testing::RedisServer;
use sessiond_segments::testing::Moto;
use sessiond_streams::config::ColdBackend;
use sessiond_streams::offset;

fn tiny_policy(c: &mut Config) {
    let cold = &mut c.streams.cold;
    cold.min_segment_bytes = 2_000;
    cold.max_segment_bytes = 4_000;
    cold.keep_hot_bytes = 1_500;
    cold.max_age_s = 0;
    cold.interval_s = 1;
    c.streams.max_read_chunk_bytes = 3_000;
}

/// The `(start, end)` of every segment file under `dir`, sorted.
fn local_segments(dir: &Path) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                out.extend(parse_segment_name(name));
            }
        }
    }
    out.sort_unstable();
    out
}

/// `<start:020>-<end:020>-<nonce>.seg` → `(start, end)`.
fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let name = name.strip_suffix(".seg")?;
    let mut parts = name.split('-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Segments listed by moto under `prefix` (from the XML `<Key>`s).
fn s3_segments(moto: &Moto, prefix: &str) -> Vec<(u64, u64)> {
    let xml = moto.list("segments", prefix);
    let mut out: Vec<(u64, u64)> = xml
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .filter_map(|k| k.rsplit('/').next())
        .filter_map(parse_segment_name)
        .collect();
    out.sort_unstable();
    out
}

/// Waits until `segments()` is non-empty and unchanged across two compaction intervals.
async fn settled(segments: impl Fn() -> Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "compaction did not settle: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        let now = segments();
        if !now.is_empty() && now == last {
            return now;
        }
        last = now;
    }
}

/// Creates `url` and appends varied messages; returns the offset token after each append.
async fn fill(s: &TestServer, url: &str, json: bool) -> Vec<u64> {
    let ct = if json {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let res = s.put(url).header("content-type", ct).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let mut ends = vec![0];
    for i in 0..120usize {
        let len = 1 + (i * 7919) % 300;
        let body: Vec<u8> = if json {
            serde_json::to_vec(&serde_json::json!([{ "i": i, "pad": "x".repeat(len) }, i])).unwrap()
        } else {
            (0..len).map(|j| ((i * 31 + j) % 256) as u8).collect()
        };
        let res = s
            .post(url)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "append {i}: {}", res.status());
        let next = res.headers()["stream-next-offset"].to_str().unwrap();
        ends.push(offset::parse_token(next).unwrap());
    }
    ends
}

/// Every page from `from` to the tail: (body of each page, next offset of each page).
async fn read_all(s: &TestServer, url: &str, from: u64) -> Vec<(Vec<u8>, String)> {
    let mut at = offset::format(from);
    let mut pages = Vec::new();
    loop {
        let res = s.get(&format!("{url}?offset={at}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "read {url} from {at}");
        let done = res.headers().contains_key("stream-up-to-date");
        at = res.headers()["stream-next-offset"]
            .to_str()
            .unwrap()
            .to_owned();
        pages.push((res.bytes().await.unwrap().to_vec(), at.clone()));
        if done {
            return pages;
        }
    }
}

/// Fills a binary and a JSON stream, reads them from many offsets, waits for compaction, and
/// checks every read again. Returns the segments seen.
async fn round_trip(
    s: &TestServer,
    name: &str,
    segments: impl Fn() -> Vec<(u64, u64)>,
) -> Vec<(u64, u64)> {
    let bin = format!("/v1/stream/{name}/bin");
    let json = format!("/v1/stream/{name}/json");
    let bin_ends = fill(s, &bin, false).await;
    let json_ends = fill(s, &json, true).await;
    let tail = *bin_ends.last().unwrap();
    // Binary offsets may point inside messages; JSON offsets are message boundaries.
    let mut bin_froms: Vec<u64> = bin_ends.iter().step_by(7).copied().collect();
    bin_froms.extend([1, 2_345, tail / 2 + 3, tail - 700, tail - 1, tail]);
    let json_froms: Vec<u64> = json_ends.iter().step_by(5).copied().collect();
    let mut before = Vec::new();
    for &from in &bin_froms {
        before.push(read_all(s, &bin, from).await);
    }
    for &from in &json_froms {
        before.push(read_all(s, &json, from).await);
    }

    let sealed = settled(&segments).await;
    assert!(sealed.len() >= 4, "several segments sealed: {sealed:?}");
    assert!(sealed.iter().any(|&(start, _)| start == 0));

    // Every segment boundary of the binary stream, and one byte either side.
    let mut boundary_froms = Vec::new();
    for &(start, end) in &sealed {
        if end <= tail {
            boundary_froms.extend([start, start + 1, end - 1, end, end + 1]);
        }
    }
    for (i, &from) in bin_froms.iter().enumerate() {
        assert_eq!(
            read_all(s, &bin, from).await,
            before[i],
            "binary from {from}"
        );
    }
    for (i, &from) in json_froms.iter().enumerate() {
        let after = read_all(s, &json, from).await;
        assert_eq!(after, before[bin_froms.len() + i], "JSON from {from}");
    }
    let whole = read_all(s, &bin, 0).await;
    let bytes: Vec<u8> = whole.iter().flat_map(|(b, _)| b.clone()).collect();
    assert_eq!(bytes.len() as u64, tail);
    for from in boundary_froms.into_iter().filter(|&f| f <= tail) {
        let got: Vec<u8> = read_all(s, &bin, from)
            .await
            .into_iter()
            .flat_map(|(b, _)| b)
            .collect();
        assert_eq!(got, bytes[from as usize..], "binary from boundary {from}");
    }
    // JSON pages are whole arrays of values even when they start in cold and end in hot.
    for (body, _) in read_all(s, &json, 0).await {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v.as_array().is_some_and(|a| !a.is_empty()));
    }
    sealed
}

fn data_dir_of(c: &Config, out: &mut PathBuf) {
    *out = c.data_dir.clone();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redis_nodes_seal_one_at_a_time_and_read_the_same_bytes() {
    let redis = RedisServer::start();
    let shared = tempfile::tempdir().unwrap();
    let node = |c: &mut Config| {
        tiny_policy(c);
        c.streams.cold.local_dir = Some(shared.path().to_path_buf());
    };
    let a = TestServer::start_node(&redis, node).await;
    let b = TestServer::start_node(&redis, node).await;
    round_trip(&a, "shared", || local_segments(shared.path())).await;
    for url in ["/v1/stream/shared/bin", "/v1/stream/shared/json"] {
        let through_a = read_all(&a, url, 0).await;
        let through_b = read_all(&b, url, 0).await;
        let bytes = |pages: &[(Vec<u8>, String)]| -> Vec<u8> {
            pages.iter().flat_map(|(b, _)| b.clone()).collect()
        };
        assert_eq!(bytes(&through_a), bytes(&through_b), "{url}");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_segments_round_trip_and_delete() {
    let mut data_dir = PathBuf::new();
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        tiny_policy(c);
        data_dir_of(c, &mut data_dir);
    })
    .await;
    let dir = data_dir.join("segments");
    round_trip(&s, "cold", || local_segments(&dir)).await;

    // DELETE removes the stream's segment files (and only its own).
    let other_before = local_segments(&dir);
    let res = s.delete("/v1/stream/cold/bin").send().await.unwrap();
    assert_eq!(res.status(), 204);
    let left = local_segments(&dir);
    assert!(left.len() < other_before.len(), "binary segments deleted");
    assert!(!left.is_empty(), "the JSON stream keeps its segments");
    let res = s.delete("/v1/stream/cold/json").send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert!(local_segments(&dir).is_empty(), "no segment file left");

    // A re-created stream starts empty: nothing of the old incarnation leaks into it.
    let url = "/v1/stream/cold/bin";
    let res = s
        .put(url)
        .header("content-type", "application/octet-stream")
        .body("fresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = s.get(&format!("{url}?offset=-1")).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"fresh");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_removes_segments() {
    let mut data_dir = PathBuf::new();
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        tiny_policy(c);
        data_dir_of(c, &mut data_dir);
    })
    .await;
    let dir = data_dir.join("segments");
    let url = "/v1/stream/expiring";
    let res = s
        .put(url)
        .header("content-type", "application/octet-stream")
        .header("stream-ttl", "4")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    for i in 0..40u8 {
        let res = s
            .post(url)
            .header("content-type", "application/octet-stream")
            .body(vec![i; 250])
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }
    settled(|| local_segments(&dir)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let res = s.get(&format!("{url}?offset=-1")).send().await.unwrap();
    assert_eq!(res.status(), 404, "expired");
    assert!(
        local_segments(&dir).is_empty(),
        "expiry removed the segments"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_segments_round_trip_and_delete() {
    let moto = Moto::start();
    moto.create_bucket("segments");
    let endpoint = moto.endpoint();
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        tiny_policy(c);
        let cold = &mut c.streams.cold;
        cold.backend = ColdBackend::S3;
        cold.s3.endpoint = endpoint;
        cold.s3.bucket = "segments".into();
        cold.s3.access_key_id = "test".into();
        cold.s3.secret_access_key = "test".into();
        cold.s3.allow_http = true;
        cold.s3.prefix = "node-a/".into();
    })
    .await;
    round_trip(&s, "s3", || s3_segments(&moto, "node-a/")).await;
    for name in ["bin", "json"] {
        let res = s
            .delete(&format!("/v1/stream/s3/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    assert!(s3_segments(&moto, "node-a/").is_empty(), "bucket emptied");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trims_drop_whole_segments_and_refuse_reads_below_the_start() {
    let mut data_dir = PathBuf::new();
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        tiny_policy(c);
        data_dir_of(c, &mut data_dir);
    })
    .await;
    let dir = data_dir.join("segments");
    let url = "/v1/stream/cold/trim";
    let res = s
        .put(url)
        .header("content-type", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut all = Vec::new();
    for i in 0..40u8 {
        let body = vec![i; 250];
        all.extend_from_slice(&body);
        let res = s
            .post(url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }
    let segments = settled(|| local_segments(&dir)).await;
    assert!(segments.len() >= 2, "two segments at least: {segments:?}");
    let (first_end, second) = (segments[0].1, segments[1]);
    let trim = |at: u64| {
        s.post(url)
            .header("stream-trim-before", offset::format(at))
            .send()
    };
    // Past the first segment: its file goes, the others stay.
    assert_eq!(trim(first_end).await.unwrap().status(), 204);
    assert_eq!(local_segments(&dir), segments[1..].to_vec());
    // Inside the second: it stays, reads below the start are refused, above it are exact.
    let inside = second.0 + 250;
    assert!(
        inside < second.1,
        "segments hold several appends: {second:?}"
    );
    assert_eq!(trim(inside).await.unwrap().status(), 204);
    assert_eq!(local_segments(&dir), segments[1..].to_vec());
    let res = s
        .get(&format!("{url}?offset={}", offset::format(second.0)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 410);
    let got = read_all(&s, url, inside).await;
    let bytes: Vec<u8> = got.into_iter().flat_map(|(b, _)| b).collect();
    assert_eq!(bytes, all[inside as usize..], "retained bytes unchanged");
    s.stop().await;
}
