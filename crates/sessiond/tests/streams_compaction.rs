//! Keyed compaction through a real listener on every engine: `Stream-Compaction: key` on PUT,
//! `POST` with `Stream-Compact-Before`, the compacted view from `-1` and from inside the
//! compacted range (offsets unchanged), 410 `offset_gone` below the purge point, ETags that
//! change with the compaction generation, the fork point and `reset` barriers, txid events
//! kept for `min_age_s`, background compaction, and a `kill -9` between two batches on the
//! real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/binary.rs"]
mod binary;
mod common;

use std::time::Duration;

use common::{engines, TestServer};
use reqwest::{RequestBuilder, Response};
use serde_json::{json, Value};

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn event(key: &str, op: &str, v: u64) -> Value {
    let mut e = json!({"type": "item", "key": key, "headers": {"operation": op}});
    if op != "delete" {
        e["value"] = json!({"v": v});
    }
    e
}

/// Creates a compacted JSON stream; returns its tail.
async fn create(send: impl Fn(&str) -> RequestBuilder, path: &str) -> String {
    let r = send(path)
        .header("content-type", "application/json")
        .header("stream-compaction", "key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    header(&r, "stream-next-offset").unwrap()
}

/// Appends each of `events` as its own POST; returns each one's offset and the tail after.
async fn append(
    send: impl Fn(&str) -> RequestBuilder,
    path: &str,
    mut tail: String,
    events: &[Value],
) -> (Vec<String>, String) {
    let mut offsets = Vec::new();
    for e in events {
        let r = send(path)
            .header("content-type", "application/json")
            .body(e.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "append {e}");
        offsets.push(tail);
        tail = header(&r, "stream-next-offset").unwrap();
    }
    (offsets, tail)
}

/// GET from `offset`: status, `Stream-Start-Offset`, ETag and the messages (`Null` if not 200).
async fn read(req: RequestBuilder) -> (u16, Option<String>, Option<String>, Value) {
    let r = req.send().await.unwrap();
    let (status, start, etag) = (
        r.status().as_u16(),
        header(&r, "stream-start-offset"),
        header(&r, "etag"),
    );
    let body = match status {
        200 => r.json().await.unwrap(),
        _ => Value::Null,
    };
    (status, start, etag, body)
}

async fn compact(s: &TestServer, path: &str, before: &str) -> Response {
    s.post(path)
        .header("stream-compact-before", before)
        .send()
        .await
        .unwrap()
}

fn from(s: &TestServer, path: &str, offset: &str) -> RequestBuilder {
    s.get(&format!("{path}?offset={offset}"))
}

fn immediate(c: &mut sessiond::config::Config) {
    c.streams.compaction.tombstone_grace_s = 0;
    c.streams.compaction.min_age_s = 0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_latest_event_per_key_at_its_offset() {
    for engine in engines() {
        let s = TestServer::start(engine, immediate).await;
        let p = "/v1/stream/state/a";
        let tail = create(|p| s.put(p), p).await;
        let events = [
            event("a", "insert", 1),
            event("b", "insert", 2),
            event("a", "update", 3),
            event("b", "delete", 0),
            event("c", "upsert", 4),
            event("c", "update", 5),
            event("c", "update", 6),
        ];
        let (at, tail) = append(|p| s.post(p), p, tail, &events).await;
        let (_, _, old_etag, all) = read(s.get(&format!("{p}?offset=-1"))).await;
        assert_eq!(all, json!(events), "{engine:?}");

        let r = compact(&s, p, &tail).await;
        assert_eq!(r.status(), 204, "{engine:?}");
        assert_eq!(header(&r, "stream-compact-before"), Some(tail.clone()));
        let (status, start, etag, body) = read(from(&s, p, "-1")).await;
        assert_eq!(status, 200);
        assert_eq!(
            start,
            Some(at[0].clone()),
            "the retained start is unchanged"
        );
        assert_eq!(body, json!([events[2], events[6]]), "{engine:?}");
        assert_ne!(etag, old_etag, "the ETag carries the compaction generation");
        // The old ETag does not get a 304 for the compacted page.
        let r = from(&s, p, "-1")
            .header("if-none-match", old_etag.unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Survivors keep their offsets: a reader above the purged delete (events[3]) gets the
        // compacted view from there, even from a dropped event's offset.
        let (status, _, _, body) = read(from(&s, p, &at[6])).await;
        assert_eq!((status, body), (200, json!([events[6]])));
        let (status, _, _, body) = read(from(&s, p, &at[4])).await;
        assert_eq!((status, body), (200, json!([events[6]])), "{engine:?}");
        // At or below the purged delete (but above the start): 410 offset_gone, rematerialize
        // from the start it names.
        for offset in [&at[1], &at[2], &at[3]] {
            let r = from(&s, p, offset).send().await.unwrap();
            assert_eq!(r.status(), 410, "{engine:?} {offset}");
            assert_eq!(header(&r, "stream-start-offset"), Some(at[0].clone()));
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "offset_gone");
            let live = from(&s, p, offset).query(&[("live", "long-poll")]);
            assert_eq!(live.send().await.unwrap().status(), 410);
        }
        let head = s.http.head(s.url(p)).send().await.unwrap();
        assert_eq!(header(&head, "stream-compaction"), Some("key".into()));
        // Appends go on after the gaps.
        let (more, _) = append(|p| s.post(p), p, tail, &[event("a", "delete", 0)]).await;
        let (_, _, _, body) = read(from(&s, p, "-1")).await;
        assert_eq!(body, json!([events[2], events[6], event("a", "delete", 0)]));
        let (_, _, _, body) = read(from(&s, p, &more[0])).await;
        assert_eq!(body, json!([event("a", "delete", 0)]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_post_validation() {
    let s = TestServer::start(sessiond::config::EngineKind::Memory, immediate).await;
    let text = s
        .put("/v1/stream/state/text")
        .header("content-type", "text/plain")
        .header("stream-compaction", "key");
    assert_eq!(
        text.send().await.unwrap().status(),
        400,
        "JSON streams only"
    );
    let odd = s
        .put("/v1/stream/state/odd")
        .header("content-type", "application/json")
        .header("stream-compaction", "everything");
    assert_eq!(odd.send().await.unwrap().status(), 400);
    let p = "/v1/stream/state/v";
    let tail = create(|p| s.put(p), p).await;
    let (at, tail) = append(|p| s.post(p), p, tail, &[event("a", "insert", 1)]).await;
    // A re-PUT without the header confirms; with it too.
    for with in [false, true] {
        let mut put = s.put(p).header("content-type", "application/json");
        if with {
            put = put.header("stream-compaction", "key");
        }
        assert_eq!(put.send().await.unwrap().status(), 200);
    }
    let plain = "/v1/stream/state/plain";
    let put = s.put(plain).header("content-type", "application/json");
    assert_eq!(put.send().await.unwrap().status(), 201);
    let again = s
        .put(plain)
        .header("content-type", "application/json")
        .header("stream-compaction", "key");
    assert_eq!(again.send().await.unwrap().status(), 409);
    // POST: empty body, a boundary at or below the tail, a compacted stream, nothing else.
    assert_eq!(compact(&s, plain, &at[0]).await.status(), 400);
    assert_eq!(compact(&s, p, "garbage").await.status(), 400);
    let past = format!("{:016}_{:016}", 0, 999_999);
    assert_eq!(compact(&s, p, &past).await.status(), 400);
    let inside = format!("{:016}_{:016}", 0, 3);
    assert_eq!(
        compact(&s, p, &inside).await.status(),
        400,
        "not a boundary"
    );
    let both = s
        .post(p)
        .header("stream-compact-before", &tail)
        .header("stream-trim-before", &tail);
    assert_eq!(both.send().await.unwrap().status(), 400);
    let body = s
        .post(p)
        .header("stream-compact-before", &tail)
        .header("content-type", "application/json")
        .body("[]");
    assert_eq!(body.send().await.unwrap().status(), 400);
    assert_eq!(compact(&s, p, &tail).await.status(), 204);
    assert_eq!(
        compact(&s, "/v1/stream/state/none", &tail).await.status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_and_resets_are_barriers() {
    for engine in engines() {
        let s = TestServer::start(engine, immediate).await;
        let p = "/v1/stream/state/src";
        let tail = create(|p| s.put(p), p).await;
        let first = [
            event("a", "insert", 1),
            event("a", "update", 2),
            event("c", "insert", 7),
            event("c", "delete", 0),
        ];
        let (_, point) = append(|p| s.post(p), p, tail, &first).await;
        let fork = s
            .put("/v1/stream/state/fork")
            .header("content-type", "application/json")
            .header("stream-forked-from", p)
            .header("stream-fork-offset", &point);
        assert_eq!(fork.send().await.unwrap().status(), 201, "{engine:?}");
        let rest = [
            event("a", "update", 3),
            event("b", "insert", 4),
            json!({"headers": {"control": "reset"}}),
            event("b", "update", 5),
        ];
        let (_, tail) = append(|p| s.post(p), p, point.clone(), &rest).await;
        // The fork point caps the compaction, and "latest" is decided below it.
        let r = compact(&s, p, &tail).await;
        assert_eq!(r.status(), 204);
        assert_eq!(header(&r, "stream-compact-before"), Some(point.clone()));
        let (_, _, _, body) = read(from(&s, "/v1/stream/state/fork", "-1")).await;
        // While the fork lives no delete goes: c's insert does, its delete stays.
        assert_eq!(
            body,
            json!([first[1], first[3]]),
            "{engine:?}: the fork still sees a=2 and c's delete"
        );
        let (_, _, _, body) = read(from(&s, p, "-1")).await;
        let mut want = vec![first[1].clone(), first[3].clone()];
        want.extend(rest.iter().cloned());
        assert_eq!(body, json!(want), "{engine:?}");
        // Without the fork, everything up to the reset barrier compacts (c's delete too); b's
        // insert before the reset stays (it is the latest of its stretch).
        let del = s.delete("/v1/stream/state/fork").send().await.unwrap();
        assert_eq!(del.status(), 204);
        assert_eq!(compact(&s, p, &tail).await.status(), 204);
        let (_, _, _, body) = read(from(&s, p, "-1")).await;
        assert_eq!(body, json!(rest), "{engine:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txid_events_are_kept_for_min_age_and_the_sweeper_compacts() {
    for engine in engines() {
        let s = TestServer::start(engine, |c| {
            c.streams.compaction.tombstone_grace_s = 0;
            c.streams.compaction.min_age_s = 3600;
            c.streams.compaction.trigger_bytes = 1;
            c.streams.sweep_interval_s = 1;
        })
        .await;
        let p = "/v1/stream/state/tx";
        let tail = create(|p| s.put(p), p).await;
        let mut with_txid = event("a", "insert", 1);
        with_txid["headers"]["txid"] = json!("tx-1");
        let events = [with_txid, event("a", "update", 2), event("a", "update", 3)];
        append(|p| s.post(p), p, tail, &events).await;
        // The sweeper compacts in the background: a=2 goes, the young txid event stays.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, _, _, body) = read(from(&s, p, "-1")).await;
            if body == json!([events[0], events[2]]) {
                break;
            }
            assert_eq!(body.as_array().unwrap().len(), 3, "{engine:?}: {body}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{engine:?}: never compacted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads `path` from -1 on the binary until `want`, or panics after 20 s.
async fn wait_body(http: &reqwest::Client, b: &binary::Binary, path: &str, want: &Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, _, body) = read(http.get(b.url(&format!("{path}?offset=-1")))).await;
        if &body == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "got {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_compaction_batches_leaves_a_consistent_stream() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let env = [
        (
            "SESSIOND_STREAMS__COMPACTION__BATCH_CHUNKS",
            "1".to_string(),
        ),
        ("SESSIOND_STREAMS__COMPACTION__MIN_AGE_S", "0".to_string()),
        (
            "SESSIOND_STREAMS__COMPACTION__TOMBSTONE_GRACE_S",
            "0".to_string(),
        ),
    ];
    let armed = (
        "STREAMS_TEST_FAILPOINT",
        "compaction-between-batches".to_string(),
    );
    let mut first = env.to_vec();
    first.push(armed);
    let b = binary::Binary::spawn(dir.path(), &first);
    let p = "/v1/stream/state/big";
    let tail = create(|p| http.put(b.url(p)), p).await;
    let events: Vec<Value> = (1..=4).map(|v| event("a", "update", v)).collect();
    let (_, tail) = append(|p| http.post(b.url(p)), p, tail, &events).await;
    let pending = tokio::spawn(
        http.post(b.url(p))
            .header("stream-compact-before", &tail)
            .send(),
    );
    // The first batch drops a=1, then the run stops at the failpoint.
    wait_body(&http, &b, p, &json!(events[1..])).await;
    b.kill();
    let _ = pending.await;

    let b = binary::Binary::spawn(dir.path(), &env);
    wait_body(&http, &b, p, &json!(events[1..])).await;
    let again = http
        .post(b.url(p))
        .header("stream-compact-before", &tail)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
    wait_body(&http, &b, p, &json!([events[3]])).await;
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_lists_carry_the_compaction_headers() {
    let key = "compaction-test-key-0123456789";
    let s = TestServer::start(sessiond::config::EngineKind::Memory, |c| {
        c.api_keys = vec![key.into()]
    })
    .await;
    let pre = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/v1/stream/state/x"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "stream-compact-before")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    let allowed = header(&pre, "access-control-allow-headers").unwrap();
    for name in ["Stream-Compaction", "Stream-Compact-Before"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    let put = s
        .put("/v1/stream/state/x")
        .bearer_auth(key)
        .header("origin", "https://app.example")
        .header("content-type", "application/json")
        .header("stream-compaction", "key")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let exposed = header(&put, "access-control-expose-headers").unwrap();
    for name in ["Stream-Compaction", "Stream-Compact-Before"] {
        assert!(exposed.contains(name), "{exposed}");
    }
}
