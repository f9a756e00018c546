//! Retention through a real listener on every engine: explicit trims (`POST` with
//! `Stream-Trim-Before`), the 410 `offset_gone` with `Stream-Start-Offset` for reads below the
//! retained start, `offset=-1` starting there, the start on HEAD and every 200, forks keeping
//! what they inherited; and a `kill -9` between two trim batches on the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/binary.rs"]
mod binary;
mod common;

use std::time::Duration;

use common::{engines, json, TestServer};
use reqwest::Response;

/// An offset token for byte position `p`.
fn off(p: u64) -> String {
    format!("{:016}_{p:016}", 0)
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Creates a text stream and appends `parts`, one append each.
async fn text_stream(s: &TestServer, path: &str, parts: &[&str]) {
    let put = s
        .put(path)
        .header("content-type", "text/plain")
        .send()
        .await;
    assert_eq!(put.unwrap().status(), 201);
    for p in parts {
        let r = s
            .post(path)
            .header("content-type", "text/plain")
            .body(p.to_string());
        assert_eq!(r.send().await.unwrap().status(), 204);
    }
}

fn trim(s: &TestServer, path: &str, before: &str) -> reqwest::RequestBuilder {
    s.post(path).header("stream-trim-before", before)
}

async fn read(s: &TestServer, path: &str, offset: &str) -> (u16, Option<String>, String) {
    let r = s
        .get(&format!("{path}?offset={offset}"))
        .send()
        .await
        .unwrap();
    let start = header(&r, "stream-start-offset");
    (r.status().as_u16(), start, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_offsets_are_gone_and_reads_start_at_the_retained_start() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let p = "/v1/stream/ret/a";
        text_stream(&s, p, &["aaaa", "bbbb", "cccc"]).await;
        let head = s.http.head(s.url(p)).send().await.unwrap();
        assert_eq!(
            header(&head, "stream-start-offset"),
            Some(off(0)),
            "{engine:?}"
        );

        let r = trim(&s, p, &off(4)).send().await.unwrap();
        assert_eq!(r.status(), 204, "{engine:?}");
        assert_eq!(header(&r, "stream-start-offset"), Some(off(4)));
        assert_eq!(header(&r, "stream-closed"), None);

        // Below the start: 410 offset_gone naming it.
        let r = s
            .get(&format!("{p}?offset={}", off(0)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 410, "{engine:?}");
        assert_eq!(header(&r, "stream-start-offset"), Some(off(4)));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "offset_gone");
        assert!(body["error"]["message"].as_str().unwrap().contains(&off(4)));
        for live in ["long-poll", "sse"] {
            let r = s
                .get(&format!("{p}?offset={}&live={live}", off(2)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 410, "{engine:?} {live}");
        }
        // -1 and no offset start at the retained start; offsets above it never changed.
        assert_eq!(
            read(&s, p, "-1").await,
            (200, Some(off(4)), "bbbbcccc".into()),
            "{engine:?}"
        );
        let plain = s.get(p).send().await.unwrap();
        assert_eq!(plain.text().await.unwrap(), "bbbbcccc");
        assert_eq!(
            read(&s, p, &off(8)).await,
            (200, Some(off(4)), "cccc".into())
        );
        let head = s.http.head(s.url(p)).send().await.unwrap();
        assert_eq!(header(&head, "stream-start-offset"), Some(off(4)));
        // A trim at or below the start changes nothing.
        let r = trim(&s, p, &off(0)).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(header(&r, "stream-start-offset"), Some(off(4)));

        // A closed stream can still be trimmed.
        let close = s
            .post(p)
            .header("stream-closed", "true")
            .send()
            .await
            .unwrap();
        assert_eq!(close.status(), 204);
        let r = trim(&s, p, &off(12)).send().await.unwrap();
        assert_eq!(r.status(), 204, "{engine:?}");
        assert_eq!(header(&r, "stream-closed"), Some("true".into()));
        assert_eq!(read(&s, p, "-1").await, (200, Some(off(12)), String::new()));
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_trims_are_400_and_change_nothing() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let p = "/v1/stream/ret/bad";
        text_stream(&s, p, &["aaaa", "bbbb"]).await;
        let cases = [
            (trim(&s, p, &off(2)), "not a message boundary"),
            (trim(&s, p, &off(9)), "past the tail"),
            (trim(&s, p, "-1"), "not an offset"),
            (trim(&s, p, "garbage"), "malformed"),
            (trim(&s, p, &off(4)).body("x"), "with a body"),
            (
                trim(&s, p, &off(4)).header("stream-closed", "true"),
                "with Stream-Closed",
            ),
            (
                trim(&s, p, &off(4)).header("stream-seq", "5"),
                "with Stream-Seq",
            ),
            (
                trim(&s, p, &off(4))
                    .header("producer-id", "p")
                    .header("producer-epoch", "0")
                    .header("producer-seq", "0"),
                "with producer headers",
            ),
        ];
        for (req, what) in cases {
            let (status, body) = json(req).await;
            common::assert_error(status, &body, 400, &format!("{engine:?}: trim {what}"));
        }
        assert_eq!(
            read(&s, p, "-1").await,
            (200, Some(off(0)), "aaaabbbb".into())
        );
        // Without the header an empty POST keeps the protocol's 400.
        let (status, _) = json(s.post(p)).await;
        assert_eq!(status, 400);
        // A trim needs the stream.
        let (status, _) = json(trim(&s, "/v1/stream/ret/none", &off(0))).await;
        assert_eq!(status, 404);
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_trims_cut_between_messages_of_one_append() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let p = "/v1/stream/ret/json";
        let put = s
            .put(p)
            .header("content-type", "application/json")
            .send()
            .await;
        assert_eq!(put.unwrap().status(), 201);
        // One append, one stored chunk: `10,"x",{"k":[1,2]}` — messages at 0, 3 and 7.
        let post = s
            .post(p)
            .header("content-type", "application/json")
            .body(r#"[10,"x",{"k":[1,2]}]"#);
        assert_eq!(post.send().await.unwrap().status(), 204);
        for inside in [1, 2, 8] {
            let (status, _) = json(trim(&s, p, &off(inside))).await;
            assert_eq!(status, 400, "{engine:?}: {inside} is inside a message");
        }
        assert_eq!(trim(&s, p, &off(3)).send().await.unwrap().status(), 204);
        assert_eq!(
            read(&s, p, "-1").await,
            (200, Some(off(3)), r#"["x",{"k":[1,2]}]"#.into()),
            "{engine:?}"
        );
        assert_eq!(read(&s, p, &off(0)).await.0, 410);
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_keep_what_they_inherited() {
    for engine in engines() {
        let s = TestServer::start(engine, |_| {}).await;
        let src = "/v1/stream/ret/src";
        text_stream(&s, src, &["aaaa", "bbbb", "cccc"]).await;
        assert_eq!(trim(&s, src, &off(4)).send().await.unwrap().status(), 204);
        // A fork of the trimmed source inherits from the source's start on.
        let fork = s
            .put("/v1/stream/ret/fork")
            .header("stream-forked-from", src)
            .header("stream-fork-offset", off(8));
        assert_eq!(fork.send().await.unwrap().status(), 201, "{engine:?}");
        assert_eq!(
            read(&s, "/v1/stream/ret/fork", "-1").await,
            (200, Some(off(4)), "bbbb".into()),
            "{engine:?}"
        );
        // The source keeps what the fork inherited: its start stays where the fork began.
        let r = trim(&s, src, &off(12)).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(
            header(&r, "stream-start-offset"),
            Some(off(4)),
            "{engine:?}"
        );
        assert_eq!(read(&s, src, &off(0)).await.0, 410);
        assert_eq!(
            read(&s, "/v1/stream/ret/fork", "-1").await,
            (200, Some(off(4)), "bbbb".into()),
            "{engine:?}"
        );
        assert_eq!(read(&s, "/v1/stream/ret/fork", &off(0)).await.0, 410);
        // A fork below the source's start: 400 naming it.
        let below = s
            .put("/v1/stream/ret/fork2")
            .header("stream-forked-from", src)
            .header("stream-fork-offset", off(0))
            .send()
            .await
            .unwrap();
        assert_eq!(below.status(), 400, "{engine:?}");
        assert_eq!(header(&below, "stream-start-offset"), Some(off(4)));
        // Once the fork is gone the source trims further.
        let del = s.delete("/v1/stream/ret/fork").send().await.unwrap();
        assert_eq!(del.status(), 204);
        let r = trim(&s, src, &off(8)).send().await.unwrap();
        assert_eq!(
            header(&r, "stream-start-offset"),
            Some(off(8)),
            "{engine:?}"
        );
        assert_eq!(
            read(&s, src, "-1").await,
            (200, Some(off(8)), "cccc".into())
        );

        // The soft-deleted 410 keeps its code and has no start header.
        let keep = s
            .put("/v1/stream/ret/fork3")
            .header("stream-forked-from", src)
            .send()
            .await
            .unwrap();
        assert_eq!(keep.status(), 201);
        assert_eq!(s.delete(src).send().await.unwrap().status(), 204);
        let r = s.get(src).send().await.unwrap();
        assert_eq!(r.status(), 410);
        assert_eq!(header(&r, "stream-start-offset"), None);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "gone");
        s.stop().await;
    }
}

/// The value of counter `name` on the binary's `/metrics`.
async fn binary_counter(http: &reqwest::Client, b: &binary::Binary, name: &str) -> f64 {
    let text = http
        .get(b.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_trim_batches_keeps_the_start_and_reclaims_later() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let batch = ("SESSIOND_STREAMS__TRIM_BATCH_CHUNKS", "1".to_string());
    let armed = ("STREAMS_TEST_FAILPOINT", "trim-between-batches".to_string());
    let b = binary::Binary::spawn(dir.path(), &[batch.clone(), armed]);
    let p = "/v1/stream/big";
    let put = http.put(b.url(p)).header("content-type", "text/plain");
    assert_eq!(put.send().await.unwrap().status(), 201);
    for part in ["aaaa", "bbbb", "cccc", "dddd", "eeee"] {
        let post = http
            .post(b.url(p))
            .header("content-type", "text/plain")
            .body(part);
        assert_eq!(post.send().await.unwrap().status(), 204);
    }
    // The trim deletes one chunk, then stops at the failpoint with three more below its start.
    let pending = tokio::spawn(
        http.post(b.url(p))
            .header("stream-trim-before", off(16))
            .send(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while binary_counter(&http, &b, "sessiond_streams_trimmed_chunks_total").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first batch never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.kill();
    let _ = pending.await;

    let b = binary::Binary::spawn(dir.path(), &[batch]);
    let r = http
        .get(b.url(&format!("{p}?offset={}", off(8))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410, "the start survived the kill");
    assert_eq!(header(&r, "stream-start-offset"), Some(off(16)));
    let r = http
        .get(b.url(&format!("{p}?offset=-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "eeee");
    // The next trim (here the same offset again) reclaims the rows the kill left behind.
    let again = http
        .post(b.url(p))
        .header("stream-trim-before", off(16))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
    assert_eq!(
        binary_counter(&http, &b, "sessiond_streams_trimmed_chunks_total").await,
        3.0,
        "the three chunks below the start left by the kill"
    );
    b.stop();
}

/// Polls HEAD until `Stream-Start-Offset` is `want`, or panics after 20 s.
async fn wait_start(s: &TestServer, path: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let head = s.http.head(s.url(path)).send().await.unwrap();
        let seen = header(&head, "stream-start-offset");
        if seen.as_deref() == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}: {path} start stayed {seen:?}, want {want}",
            s.engine
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_enforces_retention_set_on_put_or_by_prefix() {
    for engine in engines() {
        let s = TestServer::start(engine, |c| {
            c.streams.sweep_interval_s = 1;
            c.streams.retention_mark_interval_s = 1;
            c.streams.retention = vec![sessiond_streams::config::RetentionDefault {
                prefix: "logs/".into(),
                max_age_s: None,
                max_bytes: Some(4),
            }];
        })
        .await;
        // Per stream, on PUT: keep about 8 bytes (whole appends).
        let p = "/v1/stream/ret/bytes";
        let put = s
            .put(p)
            .header("content-type", "text/plain")
            .header("stream-retention-max-bytes", "8");
        assert_eq!(put.send().await.unwrap().status(), 201);
        for part in ["aaaa", "bbbb", "cccc", "dddd"] {
            let post = s.post(p).header("content-type", "text/plain").body(part);
            assert_eq!(post.send().await.unwrap().status(), 204);
        }
        wait_start(&s, p, &off(8)).await;
        assert_eq!(
            read(&s, p, "-1").await,
            (200, Some(off(8)), "ccccdddd".into())
        );
        // Not part of PUT's idempotent comparison; a different value is a 409.
        let again = s.put(p).header("content-type", "text/plain");
        assert_eq!(again.send().await.unwrap().status(), 200, "{engine:?}");
        let same = s
            .put(p)
            .header("content-type", "text/plain")
            .header("stream-retention-max-bytes", "8");
        assert_eq!(same.send().await.unwrap().status(), 200);
        let other = s
            .put(p)
            .header("content-type", "text/plain")
            .header("stream-retention-max-bytes", "9");
        assert_eq!(other.send().await.unwrap().status(), 409);
        let (status, _) = json(
            s.put("/v1/stream/ret/badret")
                .header("stream-retention-max-age", "0"),
        )
        .await;
        assert_eq!(status, 400);

        // By prefix, for a stream created without its own policy.
        let l = "/v1/stream/logs/app";
        text_stream(&s, l, &["aaaa", "bbbb"]).await;
        wait_start(&s, l, &off(4)).await;
        // Outside the prefix nothing is trimmed.
        let n = "/v1/stream/other/app";
        text_stream(&s, n, &["aaaa", "bbbb"]).await;
        s.get(n).send().await.unwrap();
        let head = s.http.head(s.url(n)).send().await.unwrap();
        assert_eq!(header(&head, "stream-start-offset"), Some(off(0)));

        // PATCH changes a stream's policy later.
        let q = "/v1/stream/ret/patched";
        text_stream(&s, q, &["aaaa", "bbbb", "cccc"]).await;
        let url = "/v1/streams/ret/patched";
        for bad in [r#"{"max_bytes":0}"#, r#"{"bogus":1}"#, "[1]", "not json"] {
            let (status, body) = json(s.patch(url).body(bad)).await;
            common::assert_error(status, &body, 400, &format!("{engine:?}: PATCH {bad}"));
        }
        let (status, _) = json(s.patch("/v1/streams/ret/none").body("{}")).await;
        assert_eq!(status, 404);
        let (status, body) = json(s.patch(url).body(r#"{"max_bytes":4}"#)).await;
        assert_eq!((status, body), (200, serde_json::json!({"max_bytes": 4})));
        wait_start(&s, q, &off(8)).await;
        let same = s
            .put(q)
            .header("content-type", "text/plain")
            .header("stream-retention-max-bytes", "4");
        assert_eq!(same.send().await.unwrap().status(), 200, "{engine:?}");
        let (status, body) = json(s.patch(url).body(r#"{"max_bytes":null}"#)).await;
        assert_eq!((status, body), (200, serde_json::json!({})));

        // By age: what was appended more than a second ago goes.
        let a = "/v1/stream/ret/age";
        let put = s
            .put(a)
            .header("content-type", "text/plain")
            .header("stream-retention-max-age", "1");
        assert_eq!(put.send().await.unwrap().status(), 201);
        let first = s.post(a).header("content-type", "text/plain").body("old!");
        assert_eq!(first.send().await.unwrap().status(), 204);
        // Let a mark interval pass (time is the feature here, not a synchronization).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = s.post(a).header("content-type", "text/plain").body("new!");
        assert_eq!(second.send().await.unwrap().status(), 204);
        wait_start(&s, a, &off(4)).await;
        assert_eq!(read(&s, a, "-1").await.2, "new!");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_on_one_node_is_seen_by_another() {
    let redis = sessiond_engine_redis::testing::RedisServer::start();
    let a = TestServer::start_node(&redis, |_| {}).await;
    let b = TestServer::start_node(&redis, |_| {}).await;
    let p = "/v1/stream/ret/nodes";
    text_stream(&a, p, &["aaaa", "bbbb", "cccc"]).await;
    // B has the stream cached before the trim.
    assert_eq!(read(&b, p, "-1").await.2, "aaaabbbbcccc");
    assert_eq!(trim(&a, p, &off(8)).send().await.unwrap().status(), 204);
    assert_eq!(read(&b, p, &off(0)).await.0, 410);
    assert_eq!(read(&b, p, "-1").await, (200, Some(off(8)), "cccc".into()));
    a.stop().await;
    b.stop().await;
}
