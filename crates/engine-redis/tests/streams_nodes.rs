//! Two engine handles on one Redis behave like two sessiond nodes: commits through either are
//! totally ordered by the tail check, and each learns of the other's changes over pub/sub.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessiond_engine_redis::testing::RedisServer;
use sessiond_engine_redis::{RedisEngine, RedisOptions};
use sessiond_store::testsuite::{stream_chunk, stream_meta};
use sessiond_store::{
    Commit, Durability, SealLease, SegmentRef, StoreError, StreamStore, StreamWake, StreamWakes,
};

const C: Durability = Durability::Confirmed;

/// Polls `cond` every 10 ms for up to 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_race_and_wake_each_other() {
    let server = RedisServer::start();
    let a = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let b = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink_seen = seen.clone();
    b.listen(Arc::new(move |w: StreamWake<'_>| {
        let name = match w {
            StreamWake::Changed(p) => p.to_owned(),
            StreamWake::Resync => "<resync>".to_owned(),
        };
        sink_seen.lock().unwrap().push(name);
    }));
    eventually("the first resync", || {
        seen.lock().unwrap().contains(&"<resync>".to_owned())
    })
    .await;

    assert!(a
        .create_stream(&stream_meta("race", 0, b"s"), &[], C)
        .await
        .unwrap());
    // 2 nodes x 50 writers, each appending 3 bytes after the tail it last read, retrying on
    // conflict: exactly 100 appends land, contiguous, no gap and no duplicate.
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let e = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            loop {
                let m = e.stream_meta("race").await.unwrap().unwrap();
                let c = stream_chunk(m.tail, 3);
                let next = stream_meta("race", c.end(), b"s");
                if e.commit("race", m.tail, &[c], &next, C).await.unwrap() == Commit::Written {
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let chunks = b.read_chunks("race", 0, usize::MAX).await.unwrap();
    assert_eq!(chunks.len(), 100);
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.offset, 3 * i as u64, "contiguous");
        assert_eq!(*c, stream_chunk(c.offset, 3));
    }

    // B hears of A's commits and deletes, never of its own.
    seen.lock().unwrap().clear();
    let m = a.stream_meta("race").await.unwrap().unwrap();
    let next = stream_meta("race", m.tail + 1, b"s");
    a.commit("race", m.tail, &[stream_chunk(m.tail, 1)], &next, C)
        .await
        .unwrap();
    eventually("a's commit", || {
        seen.lock().unwrap().contains(&"race".to_owned())
    })
    .await;
    seen.lock().unwrap().clear();
    b.create_stream(&stream_meta("own", 0, b""), &[], C)
        .await
        .unwrap();
    b.commit(
        "own",
        0,
        &[stream_chunk(0, 1)],
        &stream_meta("own", 1, b""),
        C,
    )
    .await
    .unwrap();
    a.delete_stream("race", C).await.unwrap();
    eventually("a's delete", || {
        seen.lock().unwrap().contains(&"race".to_owned())
    })
    .await;
    assert!(
        !seen.lock().unwrap().contains(&"own".to_owned()),
        "a node does not hear its own commits"
    );
}

#[tokio::test]
async fn subscriber_resyncs_after_a_redis_restart() {
    let mut server = RedisServer::start();
    let port = server.port();
    let e = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let resyncs = Arc::new(Mutex::new(0));
    let counter = resyncs.clone();
    e.listen(Arc::new(move |w: StreamWake<'_>| {
        if w == StreamWake::Resync {
            *counter.lock().unwrap() += 1;
        }
    }));
    eventually("first subscription", || *resyncs.lock().unwrap() == 1).await;
    server.stop();
    let _again = RedisServer::start_on(port);
    eventually("resubscription", || *resyncs.lock().unwrap() >= 2).await;
    // Calls fail (Unavailable) until the connection is re-established, then work again
    // without a new engine.
    let mut created = None;
    for _ in 0..100 {
        match e.create_stream(&stream_meta("after", 0, b""), &[], C).await {
            Ok(c) => {
                created = Some(c);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, Some(true));
    assert_eq!(
        e.commit(
            "after",
            0,
            &[stream_chunk(0, 2)],
            &stream_meta("after", 2, b""),
            C
        )
        .await
        .unwrap(),
        Commit::Written
    );
}

/// One node at a time seals: the lease passes to another node only once it ran out, with a
/// greater fencing token, and the old holder's seals are refused from then on even when
/// they would fit the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sealing_lease_passes_on_and_fences_the_old_holder() {
    let server = RedisServer::start();
    let a = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let b = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let ta = a.acquire_seal_lease(300).await.unwrap().unwrap();
    assert_eq!(
        b.acquire_seal_lease(60_000).await.unwrap(),
        None,
        "a holds it"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let tb = loop {
        if let Some(t) = b.acquire_seal_lease(60_000).await.unwrap() {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a's lease never ran out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(tb > ta, "a takeover gets a greater token");
    assert_eq!(a.acquire_seal_lease(60_000).await.unwrap(), None);

    let chunks = [
        stream_chunk(0, 10),
        stream_chunk(10, 10),
        stream_chunk(20, 10),
    ];
    assert!(a
        .create_stream(&stream_meta("sealed", 30, b"s"), &chunks, C)
        .await
        .unwrap());
    let seg = |start: u64, end: u64, by: &str| SegmentRef {
        start,
        end,
        object_key: format!("{by}/{start}-{end}"),
    };
    assert!(b.seal_segment("sealed", &seg(0, 10, "b"), C).await.unwrap());
    assert!(
        !a.seal_segment("sealed", &seg(10, 20, "a"), C)
            .await
            .unwrap(),
        "the stale holder is refused"
    );
    assert!(b
        .seal_segment("sealed", &seg(10, 20, "b"), C)
        .await
        .unwrap());
    assert_eq!(
        b.segments("sealed").await.unwrap(),
        vec![seg(0, 10, "b"), seg(10, 20, "b")]
    );
}
