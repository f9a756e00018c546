//! Durable Streams on two sessiond nodes sharing one Redis: what a client behind a
//! round-robin load balancer relies on (read-your-writes on every node, live readers woken by
//! the other node's appends, closure and producers enforced across nodes, concurrent appends
//! through both nodes totally ordered).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use sessiond_engine_redis::testing::RedisServer;

const LONG_POLL_MS: u64 = 5_000;

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn two_nodes() -> (RedisServer, TestServer, TestServer) {
    let redis = RedisServer::start();
    let tweak = |c: &mut sessiond::config::Config| c.streams.long_poll_timeout_ms = LONG_POLL_MS;
    let a = TestServer::start_node(&redis, tweak).await;
    let b = TestServer::start_node(&redis, tweak).await;
    (redis, a, b)
}

async fn create(s: &TestServer, url: &str) {
    let res = s
        .put(url)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

/// Appends `body` through `s`; returns (status, Stream-Next-Offset).
async fn append(s: &TestServer, url: &str, body: &str) -> (u16, String) {
    let res = s
        .post(url)
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let next = header(&res, "stream-next-offset").unwrap_or_default();
    (res.status().as_u16(), next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reads_its_peers_acknowledged_appends() {
    let (_redis, a, b) = two_nodes().await;
    let url = "/v1/stream/nodes/ryw";
    create(&a, url).await;
    let mut expected = String::new();
    for i in 0..20 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let piece = format!("m{i};");
        let (status, next) = append(writer, url, &piece).await;
        assert_eq!(status, 204);
        expected.push_str(&piece);
        let res = reader
            .get(&format!("{url}?offset=-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "stream-next-offset").as_deref(), Some(&*next));
        assert_eq!(header(&res, "stream-up-to-date").as_deref(), Some("true"));
        assert_eq!(res.text().await.unwrap(), expected, "read after append {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_and_sse_on_one_node_wake_for_the_other() {
    let (_redis, a, b) = two_nodes().await;
    let url = "/v1/stream/nodes/live";
    create(&a, url).await;
    let (_, tail) = append(&a, url, "first;").await;

    // Long-poll on B at the tail, append on A: B answers with the data, well before timeout.
    let poll = {
        let req = b.get(&format!("{url}?offset={tail}&live=long-poll"));
        tokio::spawn(async move {
            let started = Instant::now();
            let res = req.send().await.unwrap();
            (
                res.status().as_u16(),
                res.text().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    // The poll took its snapshot on B once B's gauge counts it (no sleep as synchronization):
    // from then on only a wake from A's append can answer it before the timeout.
    common::wait_for_counter(
        &b,
        "sessiond_streams_live_open{mode=\"long_poll\"}",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    append(&a, url, "second;").await;
    let (status, body, took) = poll.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "second;"));
    assert!(
        took < Duration::from_millis(LONG_POLL_MS),
        "woken, not timed out: {took:?}"
    );

    // SSE on B from the start sees A's later append and A's close.
    let mut res = b
        .get(&format!("{url}?offset=-1&live=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut seen = String::new();
    let mut appended = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"streamClosed\":true") {
        let chunk = tokio::time::timeout_at(deadline.into(), res.chunk())
            .await
            .expect("SSE events before the deadline")
            .unwrap()
            .expect("SSE stream open");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
        if !appended && seen.contains("second;") {
            appended = true;
            append(&a, url, "third;").await;
            let res = a
                .post(url)
                .header("stream-closed", "true")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204);
        }
    }
    assert!(
        seen.contains("data:third;"),
        "A's append reached B's SSE: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closure_and_producers_hold_across_nodes() {
    let (_redis, a, b) = two_nodes().await;
    let url = "/v1/stream/nodes/producers";
    create(&a, url).await;
    let produce_in = |s: &TestServer, epoch: u64, seq: u64, body: &str| {
        s.post(url)
            .header("content-type", "text/plain")
            .header("producer-id", "p1")
            .header("producer-epoch", epoch.to_string())
            .header("producer-seq", seq.to_string())
            .body(body.to_owned())
    };
    let produce = |s: &TestServer, seq: u64, body: &str| produce_in(s, 0, seq, body);
    assert_eq!(produce(&a, 0, "x;").send().await.unwrap().status(), 200);
    // The client's retry lands on the other node: a duplicate, not a second copy.
    assert_eq!(produce(&b, 0, "x;").send().await.unwrap().status(), 204);
    assert_eq!(produce(&b, 1, "y;").send().await.unwrap().status(), 200);
    let res = produce(&a, 3, "gap;").send().await.unwrap();
    assert_eq!(res.status(), 409, "sequence gap seen by the other node");
    assert_eq!(header(&res, "producer-expected-seq").as_deref(), Some("2"));
    // A new epoch on B; A's cached metadata still has epoch 0, where seq 1 is a duplicate:
    // A must answer from the store's state (403, stale epoch), not from its cache.
    assert_eq!(
        produce_in(&b, 1, 0, "z;").send().await.unwrap().status(),
        200
    );
    let res = produce(&a, 1, "y;").send().await.unwrap();
    assert_eq!(res.status(), 403, "stale epoch seen by the other node");
    assert_eq!(header(&res, "producer-epoch").as_deref(), Some("1"));

    // Closed on B: A refuses appends.
    let res = b
        .post(url)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (status, _) = append(&a, url, "late;").await;
    assert_eq!(status, 409);
    let res = a.get(&format!("{url}?offset=-1")).send().await.unwrap();
    assert_eq!(header(&res, "stream-closed").as_deref(), Some("true"));
    assert_eq!(res.text().await.unwrap(), "x;y;z;");

    // Deleted on A: gone on B too.
    assert_eq!(a.delete(url).send().await.unwrap().status(), 204);
    assert_eq!(b.get(url).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_through_both_nodes_are_totally_ordered() {
    let (_redis, a, b) = two_nodes().await;
    let url = "/v1/stream/nodes/race";
    create(&a, url).await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let req = if i % 2 == 0 { a.post(url) } else { b.post(url) };
        tasks.push(tokio::spawn(async move {
            let res = req
                .header("content-type", "text/plain")
                .body(format!("<{i:03}>"))
                .send()
                .await
                .unwrap();
            res.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 204, "every append acknowledged");
    }
    let body = b
        .get(&format!("{url}?offset=-1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.len(), 60 * 5, "no gap, no duplicate: {body}");
    let mut pieces: Vec<&str> = body
        .as_bytes()
        .chunks(5)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    pieces.sort_unstable();
    let expected: Vec<String> = (0..60).map(|i| format!("<{i:03}>")).collect();
    assert_eq!(pieces, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_and_deletes_while_another_node_appends() {
    let (_redis, a, b) = two_nodes().await;
    let src = "/v1/stream/nodes/src";
    create(&a, src).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appended = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let appender = {
        let (req, stop, appended) = (b.http.clone(), stop.clone(), appended.clone());
        let url = b.url(src);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = req
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body("a;")
                    .send()
                    .await
                    .unwrap();
                match res.status().as_u16() {
                    204 => {
                        n += 1;
                        appended.store(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    410 => break, // soft-deleted below
                    other => panic!("append answered {other}"),
                }
            }
            n
        })
    };
    // B is appending before A starts forking (on a fast machine A could otherwise finish
    // every fork and the delete before B's first request lands).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while appended.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "B never appended");
        tokio::task::yield_now().await;
    }
    // Each fork counts itself on the source's state, never its tail: B's appends (which leave
    // the state as it is) do not make it lose, so each is a first-try 201.
    for i in 0..10 {
        let res = a
            .put(&format!("/v1/stream/nodes/fork-{i}"))
            .header("content-type", "text/plain")
            .header("stream-forked-from", src)
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert_eq!(
            status,
            201,
            "fork {i}: {}",
            res.text().await.unwrap_or_default()
        );
    }
    // The source with live forks is soft-deleted (410) while B still appends; its forks stay.
    let res = a.delete(src).send().await.unwrap();
    assert_eq!(res.status(), 204);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(appender.await.unwrap() > 0, "B appended meanwhile");
    assert_eq!(b.get(src).send().await.unwrap().status(), 410);
    for i in 0..10 {
        let fork = format!("/v1/stream/nodes/fork-{i}");
        assert_eq!(b.get(&fork).send().await.unwrap().status(), 200);
        assert_eq!(a.delete(&fork).send().await.unwrap().status(), 204);
    }
    // The last fork released the soft-deleted source: gone for good.
    assert_eq!(a.get(src).send().await.unwrap().status(), 404);
}

/// A trim on one node racing a fork of the same source on the other: whichever the engine
/// takes first, the other is decided again, so a fork that was made always reads everything
/// it inherited (a trim decided before the fork used to delete it), and the source's start
/// never passes the fork's floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trims_racing_forks_on_another_node_never_delete_what_a_fork_reads() {
    let (_redis, a, b) = two_nodes().await;
    let mut made = 0;
    for i in 0..40 {
        let src = format!("/v1/stream/nodes/trim-src-{i}");
        create(&a, &src).await;
        let (_, point) = append(&a, &src, "abcd").await;
        let (_, tail) = append(&a, &src, "efgh").await;
        let trim = a.post(&src).header("stream-trim-before", tail).send();
        let fork_url = format!("/v1/stream/nodes/trim-fork-{i}");
        let fork = b
            .put(&fork_url)
            .header("content-type", "text/plain")
            .header("stream-forked-from", &src)
            .header("stream-fork-offset", &point)
            .send();
        // Sent in either order, so each side wins some of the races.
        let (trimmed, forked) = if i % 2 == 0 {
            tokio::join!(trim, fork)
        } else {
            let (forked, trimmed) = tokio::join!(fork, trim);
            (trimmed, forked)
        };
        assert_eq!(trimmed.unwrap().status(), 204, "trim {i}");
        match forked.unwrap().status().as_u16() {
            // The trim came first: the fork point is below the source's start now.
            400 => continue,
            201 => made += 1,
            other => panic!("fork {i} answered {other}"),
        }
        let read = b
            .get(&format!("{fork_url}?offset=-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "fork {i}");
        assert_eq!(
            read.text().await.unwrap(),
            "abcd",
            "fork {i} reads what it inherited"
        );
        // The fork came first, so the trim stopped at its floor (the source's start then).
        let source = a.get(&format!("{src}?offset=-1")).send().await.unwrap();
        assert_eq!(source.text().await.unwrap(), "abcdefgh", "source {i}");
    }
    eprintln!("{made} of 40 forks made before the trim");
}
