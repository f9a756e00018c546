//! JSON streams keep every message exactly as sent, through a real listener: key order, number
//! spelling, escapes and inner whitespace come back byte for byte in catch-up pages (cut only
//! between messages), long-poll, SSE (where a raw CR/CRLF between tokens arrives as LF, the
//! SSE format), after cold-tier sealing and after a `kill -9` and restart of the binary; and the
//! JSON limits (depth, messages per append, per-message overhead) answer 400/413.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
// The real-binary spawner needs CARGO_BIN_EXE_sessiond, which only this crate's tests have
// (common/ is also compiled into other crates' tests), so it is included here, not in common.
#[path = "common/binary.rs"]
mod binary;

use std::time::{Duration, Instant};

use binary::Binary;
use common::TestServer;
use sessiond::config::EngineKind;
use sessiond_streams::offset;

const CT: &str = "application/json";

fn nested(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

/// Awkward messages, each exactly as a producer wrote it.
fn corpus(depth: usize) -> Vec<String> {
    let mut c: Vec<String> = [
        r#"{"b":1,"a":2,"n":12345678901234567890123,"f":1e2}"#,
        "1e400",
        "-1E-400",
        "2.5E+308",
        "-0",
        "-0.0",
        "0.000000000000000000000000000001",
        "123456789012345678901234567890.123456789012345678901234567890",
        r#""\u0000 nul, \ud83d\ude00 pair, \uD83D\uDE00 upper, raw é ✓ 😀""#,
        r#""\"quoted, comma ] } [ {\" \\ \/""#,
        r#"{"dup":1,"dup":2,"dup":{"dup":[]}}"#,
        "{ \"spaced\" :  [ 1 ,\t2 ] ,  \"x\" : \"y\" }",
        "{\r\n  \"crlf\": [1,\r2]\n}",
        "true",
        "null",
        "[]",
        "{}",
        "\"\"",
        "[ [ ] , { } ]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.push(nested(depth));
    c
}

/// A batch body with whitespace around and between the messages (belonging to none).
fn batch(messages: &[String]) -> String {
    format!("\n [\r\n  {} \n]\t", messages.join(" ,\n  "))
}

/// Writes the corpus every way a JSON message can be written; returns the messages in order.
async fn write_all(http: &reqwest::Client, url: &str, depth: usize) -> Vec<String> {
    let corpus = corpus(depth);
    let mut expected = corpus.clone();
    let res = http
        .put(url)
        .header("content-type", CT)
        .body(batch(&corpus))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "create with a body");
    for m in &corpus {
        // A top-level array is a batch: an array message goes inside one.
        let body = if m.starts_with('[') {
            format!("[ {m} ]")
        } else {
            format!(" \n{m}\r\n ")
        };
        let res = http
            .post(url)
            .header("content-type", CT)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "append {m}");
        expected.push(m.clone());
    }
    // A producer's batch large enough to span several stored chunks.
    let many: Vec<String> = (0..600)
        .map(|i| format!(r#"{{"i":{i}, "pad":"{}", "x":1.50}}"#, "p".repeat(i % 300)))
        .collect();
    let res = http
        .post(url)
        .header("content-type", CT)
        .header("producer-id", "p")
        .header("producer-epoch", "0")
        .header("producer-seq", "0")
        .body(batch(&many))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "producer batch");
    expected.extend(many);
    let res = http
        .post(url)
        .header("content-type", CT)
        .body(batch(&corpus))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "batch");
    expected.extend(corpus);
    expected
}

/// How many of `expected[i..]` `body` holds, if it is exactly an array of them.
fn page_of(body: &str, expected: &[String], i: usize) -> usize {
    let mut text = String::from("[");
    for (j, m) in expected[i..].iter().enumerate() {
        if j > 0 {
            text.push(',');
        }
        text.push_str(m);
        if text.len() + 1 == body.len() {
            assert_eq!(format!("{text}]"), body, "page from message {i}");
            return j + 1;
        }
        assert!(text.len() < body.len(), "page from message {i}: {body:?}");
    }
    panic!("page from message {i} runs past the stream: {body:?}");
}

/// Catch-up pages from the start, each exactly an array of consecutive messages; returns the
/// offset token of each page's first message and the page bodies.
async fn catch_up(http: &reqwest::Client, url: &str, expected: &[String]) -> Vec<(String, String)> {
    let mut at = "-1".to_string();
    let mut i = 0;
    let mut pages = Vec::new();
    loop {
        let res = http.get(format!("{url}?offset={at}")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let done = res.headers().contains_key("stream-up-to-date");
        let next = res.headers()["stream-next-offset"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = res.text().await.unwrap();
        if i == expected.len() {
            assert_eq!(body, "[]");
        } else {
            i += page_of(&body, expected, i);
        }
        pages.push((at, body));
        at = next;
        if done {
            assert_eq!(i, expected.len(), "every message read");
            return pages;
        }
    }
}

/// The data events of an SSE response up to the first `upToDate` control.
async fn sse_data(http: &reqwest::Client, url: &str, from: &str) -> Vec<String> {
    let mut res = http
        .get(format!("{url}?offset={from}&live=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "SSE reached no upToDate control");
        let chunk = res.chunk().await.unwrap().expect("SSE ended early");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let mut kind = "";
            let mut data = Vec::new();
            for line in event.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k;
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            let data = data.join("\n");
            if kind == "data" {
                out.push(data);
            } else if data.contains("\"upToDate\":true") {
                return out;
            }
        }
    }
}

/// Every read mode returns the messages byte for byte.
async fn verify(http: &reqwest::Client, url: &str, expected: &[String]) {
    let pages = catch_up(http, url, expected).await;
    assert!(pages.len() > 3, "pages were cut: {}", pages.len());
    // Each page again from its own offset: the same bytes (offsets are stable).
    for (at, body) in pages.iter().step_by(3) {
        let res = http.get(format!("{url}?offset={at}")).send().await.unwrap();
        assert_eq!(&res.text().await.unwrap(), body, "page at {at}");
        let res = http
            .get(format!("{url}?offset={at}&live=long-poll"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(&res.text().await.unwrap(), body, "long-poll at {at}");
    }
    // SSE: the same pages, raw CR / CRLF as LF.
    let sse = sse_data(http, url, "-1").await;
    let lf: Vec<String> = expected
        .iter()
        .map(|m| m.replace("\r\n", "\n").replace('\r', "\n"))
        .collect();
    let mut i = 0;
    for data in &sse {
        i += page_of(data, &lf, i);
    }
    assert_eq!(i, expected.len(), "SSE carried every message");
}

/// A long-poll waiting at the tail receives a new message exactly.
async fn long_poll_wakes_exact(http: &reqwest::Client, url: &str) {
    let head = http.head(url).send().await.unwrap();
    let tail = head.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned();
    let waiting = tokio::spawn({
        let (http, url) = (http.clone(), url.to_owned());
        async move {
            let res = http
                .get(format!("{url}?offset={tail}&live=long-poll"))
                .send()
                .await
                .unwrap();
            (res.status(), res.text().await.unwrap())
        }
    });
    let message = r#"{"z":0,"late":1E+2}"#;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !waiting.is_finished() && Instant::now() < deadline {
        let res = http
            .post(url)
            .header("content-type", CT)
            .body(format!("[{message}]"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = waiting.await.unwrap();
    assert!(status == 200, "long-poll answered {status}");
    assert!(body.starts_with(&format!("[{message}")), "{body}");
}

fn segment_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "seg") {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_bytes_in_every_read_mode_after_sealing_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let depth = 200; // deeper than serde_json's own recursion limit
    let env = [
        ("SESSIOND_STREAMS__MAX_JSON_DEPTH", depth.to_string()),
        ("SESSIOND_STREAMS__MAX_READ_CHUNK_BYTES", "3000".into()),
        ("SESSIOND_STREAMS__LONG_POLL_TIMEOUT_MS", "500".into()),
        ("SESSIOND_STREAMS__COLD__MIN_SEGMENT_BYTES", "5000".into()),
        ("SESSIOND_STREAMS__COLD__MAX_SEGMENT_BYTES", "10000".into()),
        ("SESSIOND_STREAMS__COLD__KEEP_HOT_BYTES", "100".into()),
        ("SESSIOND_STREAMS__COLD__MAX_AGE_S", "0".into()),
        ("SESSIOND_STREAMS__COLD__INTERVAL_S", "1".into()),
    ];
    let server = Binary::spawn(dir.path(), &env);
    let http = reqwest::Client::new();
    let url = server.url("/v1/stream/exact");
    let expected = write_all(&http, &url, depth).await;
    verify(&http, &url, &expected).await;

    // Sealed into the cold tier: the same bytes.
    let segments = dir.path().join("segments");
    let deadline = Instant::now() + Duration::from_secs(60);
    while segment_files(&segments) < 2 {
        assert!(Instant::now() < deadline, "no segments sealed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    verify(&http, &url, &expected).await;

    // kill -9 and restart: the same bytes, cold and hot.
    server.kill();
    let server = Binary::spawn(dir.path(), &env);
    let url = server.url("/v1/stream/exact");
    verify(&http, &url, &expected).await;
    long_poll_wakes_exact(&http, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_bytes_on_the_memory_engine_and_forks_count_messages() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.streams.max_read_chunk_bytes = 2000;
        c.streams.long_poll_timeout_ms = 500;
    })
    .await;
    let url = s.url("/v1/stream/mem");
    let expected = write_all(&s.http, &url, 128).await;
    verify(&s.http, &url, &expected).await;
    long_poll_wakes_exact(&s.http, &url).await;

    // A fork's sub-offset counts messages inside one stored append.
    let src = s.url("/v1/stream/fork-src");
    let res = s
        .http
        .put(&src)
        .header("content-type", CT)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = s
        .http
        .post(&src)
        .header("content-type", CT)
        .body("[ 1e2 , {\"b\":1,\"a\":2} , -0 , \"x\" ]")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = s
        .http
        .put(s.url("/v1/stream/fork-dst"))
        .header("stream-forked-from", "/v1/stream/fork-src")
        .header("stream-fork-offset", offset::format(0))
        .header("stream-fork-sub-offset", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = s
        .http
        .post(s.url("/v1/stream/fork-dst"))
        .header("content-type", CT)
        .body("[ 7.0 ]")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = s
        .http
        .get(s.url("/v1/stream/fork-dst?offset=-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), r#"[1e2,{"b":1,"a":2},-0,7.0]"#);
    let res = s
        .http
        .put(s.url("/v1/stream/fork-far"))
        .header("stream-forked-from", "/v1/stream/fork-src")
        .header("stream-fork-offset", offset::format(0))
        .header("stream-fork-sub-offset", "5")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "past the last message");
    s.stop().await;
}

async fn post(s: &TestServer, url: &str, body: String) -> (u16, String) {
    let res = s
        .http
        .post(url)
        .header("content-type", CT)
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_depth_count_and_overhead_limits() {
    for engine in [EngineKind::Memory, EngineKind::Sqlite] {
        let s = TestServer::start(engine, |c| {
            c.streams.max_messages_per_append = 50;
            c.streams.json_message_overhead_bytes = 100;
            c.streams.max_append_bytes = 10_000;
        })
        .await;
        let url = s.url("/v1/stream/limits");
        let res = s
            .http
            .put(&url)
            .header("content-type", CT)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);

        let (status, body) = post(&s, &url, "[1,\n {\"a\": tru}]".into()).await;
        assert_eq!(status, 400);
        assert!(body.contains("line 2 column 8"), "{body}");
        // The default depth: 128 levels are a message, 129 are a 400 (also inside a batch).
        let (status, _) = post(&s, &url, format!("[{}]", nested(128))).await;
        assert_eq!(status, 204);
        let (status, body) = post(&s, &url, format!("[{}]", nested(129))).await;
        assert_eq!(status, 400);
        assert!(body.contains("max_json_depth"), "{body}");
        // Messages per append, and the per-message overhead against max_append_bytes.
        let (status, _) = post(&s, &url, format!("[{}]", vec!["0"; 50].join(","))).await;
        assert_eq!(status, 204);
        let (status, body) = post(&s, &url, format!("[{}]", vec!["0"; 51].join(","))).await;
        assert_eq!(status, 413);
        assert!(body.contains("max_messages_per_append"), "{body}");
        let long = format!("\"{}\"", "x".repeat(108));
        let (status, body) = post(&s, &url, format!("[{}]", vec![long; 50].join(","))).await;
        assert_eq!(
            status, 413,
            "5,551 bytes + 50 x 100 bytes of overhead > 10,000"
        );
        assert!(body.contains("max_append_bytes"), "{body}");
        // Nothing of a refused request was stored.
        let res = s.http.get(format!("{url}?offset=-1")).send().await.unwrap();
        let all = res.text().await.unwrap();
        assert_eq!(
            all,
            format!("[{},{}]", nested(128), vec!["0"; 50].join(","))
        );
        s.stop().await;
    }

    // A configured depth far beyond any recursion limit: accepted, read back, never a crash.
    let s = TestServer::start(EngineKind::Memory, |c| c.streams.max_json_depth = 20_000).await;
    let url = s.url("/v1/stream/deep");
    let deep = nested(20_000);
    let res = s
        .http
        .put(&url)
        .header("content-type", CT)
        .body(format!("[{deep}]"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (status, _) = post(&s, &url, format!("[{}]", nested(20_001))).await;
    assert_eq!(status, 400);
    let res = s.http.get(format!("{url}?offset=-1")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), format!("[{deep}]"));
    let sse = sse_data(&s.http, &url, "-1").await;
    assert_eq!(sse, vec![format!("[{deep}]")]);
    s.stop().await;
}
