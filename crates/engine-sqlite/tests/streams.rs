//! Streams on SQLite: the shared suite, group commit across streams, and persistence.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_store::testsuite::{run_streams, session, stream_chunk, stream_meta};
use sessiond_store::{
    CacheStore, Commit, Durability, EngineAdmin, ForkSource, Outbox, OutboxRoute, ProducerUpdate,
    RouteObjects, Routed, RoutedAppend, SegmentRef, SessionStore, StreamMeta, StreamStore,
};

const C: Durability = Durability::Confirmed;

/// The in-memory engine (the reference double every capability's unit tests use) against the
/// same stream checks.
#[tokio::test]
async fn memory_streams_pass_the_shared_suite() {
    run_streams(Arc::new(sessiond_store::memory::MemoryEngine::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_streams_pass_the_shared_suite() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    run_streams(engine.clone()).await;
    engine.close().await.unwrap();
    assert!(
        engine.stream_meta("x").await.is_err(),
        "closed engine refuses reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_to_many_streams_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    const STREAMS: usize = 100;
    const APPENDS: usize = 10;
    for i in 0..STREAMS {
        let m = stream_meta(&format!("s/{i}"), 0, b"");
        assert!(engine.create_stream(&m, &[], C).await.unwrap());
    }
    let before = engine.stats();
    // 100 writers, one per stream, each appending 10 times in a row (appends to one stream
    // are serialized by the capability): 1,000 confirmed appends, 100 in flight at once.
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let path = format!("s/{i}");
                let mut tail = 0u64;
                for _ in 0..APPENDS {
                    let c = stream_chunk(tail, 256);
                    let m = stream_meta(&path, c.end(), b"");
                    let outcome = engine
                        .commit(&path, tail, std::slice::from_ref(&c), &m, C)
                        .await;
                    assert_eq!(outcome.unwrap(), Commit::Written);
                    tail = c.end();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let after = engine.stats();
    let writes = after.writes - before.writes;
    let commits = after.commits - before.commits;
    assert_eq!(writes, (STREAMS * APPENDS) as u64);
    assert!(
        commits * 5 <= writes,
        "{writes} appends took {commits} transactions: group commit is not batching"
    );
    for i in 0..STREAMS {
        let chunks = engine
            .read_chunks(&format!("s/{i}"), 0, usize::MAX)
            .await
            .unwrap();
        assert_eq!(chunks.len(), APPENDS);
    }
    engine.close().await.unwrap();
}

/// Confirmed writes sharing a commit are answered through a task of the runtime that opened
/// the engine (`writer::Answers`). Once that runtime is gone, the writer answers them itself:
/// nothing waits forever, and every write is there.
#[test]
fn shared_commits_are_answered_after_the_opening_runtime_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let opening = tokio::runtime::Runtime::new().unwrap();
    let engine = opening
        .block_on(async { SqliteEngine::open(dir.path(), SqliteOptions::default()) })
        .unwrap();
    let run = |runtime: &tokio::runtime::Runtime, round: usize| {
        runtime.block_on(async {
            let tasks: Vec<_> = (0..50)
                .map(|i| {
                    let engine = engine.clone();
                    tokio::spawn(async move {
                        let path = format!("r{round}/{i}");
                        let m = stream_meta(&path, 0, b"");
                        assert!(engine.create_stream(&m, &[], C).await.unwrap());
                        let c = stream_chunk(0, 64);
                        let m = stream_meta(&path, c.end(), b"");
                        let outcome = engine.commit(&path, 0, std::slice::from_ref(&c), &m, C);
                        assert_eq!(outcome.await.unwrap(), Commit::Written);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    run(&opening, 0);
    drop(opening);
    let other = tokio::runtime::Runtime::new().unwrap();
    run(&other, 1);
    other.block_on(async {
        for round in 0..2 {
            for i in 0..50 {
                let path = format!("r{round}/{i}");
                let chunks = engine.read_chunks(&path, 0, usize::MAX).await.unwrap();
                assert_eq!(chunks.len(), 1, "{path}");
            }
        }
        engine.close().await.unwrap();
    });
}

/// A commit that fails after its first row (two chunks at one offset: the second insert
/// violates the key) leaves nothing behind, whether it ran alone in its transaction (rolled
/// back whole) or amid other stream commits (which run without savepoints: the transaction is
/// rolled back and they all run again, each under its own), and the stream's next commit is
/// checked against the stored tail, not the failed one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_failing_midway_leaves_nothing() {
    const OTHERS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    let others: Vec<String> = (0..OTHERS).map(|i| format!("f/other-{i}")).collect();
    let paths = ["f/alone", "f/amid"].map(String::from);
    for path in paths.iter().chain(&others) {
        assert!(engine
            .create_stream(&stream_meta(path, 0, b""), &[], C)
            .await
            .unwrap());
        let first = stream_chunk(0, 8);
        let m = stream_meta(path, first.end(), b"");
        let written = engine.commit(path, 0, std::slice::from_ref(&first), &m, C);
        assert_eq!(written.await.unwrap(), Commit::Written);
    }
    let clash = vec![stream_chunk(8, 4), stream_chunk(8, 4)];
    let after = stream_meta("f/alone", 16, b"");
    assert!(engine
        .commit("f/alone", 8, &clash, &after, C)
        .await
        .is_err());

    // The failing commit queued in the middle of the others, all before any is awaited.
    let before = engine.stats();
    let mut tickets = Vec::new();
    for (i, path) in others.iter().enumerate() {
        if i == OTHERS / 2 {
            let m = stream_meta("f/amid", 16, b"");
            let none = ProducerUpdate::default();
            let ticket = engine.commit_enqueue("f/amid", 8, clash.clone(), m, none, C);
            tickets.push(("f/amid", ticket.await.unwrap()));
        }
        let c = stream_chunk(8, 4);
        let m = stream_meta(path, c.end(), b"");
        let none = ProducerUpdate::default();
        let ticket = engine.commit_enqueue(path, 8, vec![c], m, none, C);
        tickets.push((path, ticket.await.unwrap()));
    }
    for (path, ticket) in tickets {
        match path {
            "f/amid" => assert!(ticket.await.is_err()),
            _ => assert_eq!(ticket.await.unwrap(), Commit::Written, "{path}"),
        }
    }
    let now = engine.stats();
    assert!(
        now.commits - before.commits < now.writes - before.writes,
        "the commits shared no transaction"
    );
    for path in &others {
        assert_eq!(engine.stream_meta(path).await.unwrap().unwrap().tail, 12);
        assert_eq!(
            engine.read_chunks(path, 0, usize::MAX).await.unwrap().len(),
            2
        );
    }
    for path in &paths {
        assert_eq!(engine.stream_meta(path).await.unwrap().unwrap().tail, 8);
        assert_eq!(
            engine.read_chunks(path, 0, usize::MAX).await.unwrap().len(),
            1
        );
        let stale = stream_meta(path, 20, b"");
        let late = [stream_chunk(16, 4)];
        let refused = engine.commit(path, 16, &late, &stale, C).await.unwrap();
        assert_eq!(
            refused,
            Commit::Conflict,
            "{path}: the failed commit's tail"
        );
        let next = stream_chunk(8, 4);
        let m = stream_meta(path, next.end(), b"");
        let written = engine.commit(path, 8, std::slice::from_ref(&next), &m, C);
        assert_eq!(written.await.unwrap(), Commit::Written, "{path}");
    }
    engine.close().await.unwrap();
}

/// The writer remembers each committed stream's row (id, tail, expiry, state) so a plain
/// append neither reads nor rewrites it. Writes that change a row behind that memory (here a
/// fork, which rewrites its source's state, and a delete-and-recreate, which gives the path a
/// new row) must make the next commit see the stored row: a remembered state would skip the
/// row's update and keep the fork's state; a remembered id or tail would refuse the commit on
/// the new row (or write chunks for the deleted one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_after_other_writes_see_the_stored_row() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    let path = "t/remembered";
    let mine = stream_meta(path, 0, b"mine");
    assert!(engine.create_stream(&mine, &[], C).await.unwrap());
    let first = stream_chunk(0, 8);
    let after_first = stream_meta(path, 8, b"mine");
    let written = engine.commit(path, 0, std::slice::from_ref(&first), &after_first, C);
    assert_eq!(written.await.unwrap(), Commit::Written);

    // A fork rewrites its source's state (same tail) behind the remembered row.
    let source = ForkSource {
        path: path.into(),
        state: b"forked".to_vec(),
        expires_at: None,
        expected_state: None,
        max_start: None,
    };
    let fork = stream_meta("t/fork", 8, b"");
    assert!(engine.create_fork(&fork, &[], &source, C).await.unwrap());
    let second = stream_chunk(8, 4);
    let after_second = stream_meta(path, 12, b"mine");
    let written = engine.commit(path, 8, std::slice::from_ref(&second), &after_second, C);
    assert_eq!(written.await.unwrap(), Commit::Written);
    assert_eq!(
        engine.stream_meta(path).await.unwrap(),
        Some(after_second.clone()),
        "the commit's state, not the fork's"
    );

    // Deleted and created again: a new row, empty.
    assert!(engine.delete_stream(path, C).await.unwrap());
    assert!(engine.create_stream(&mine, &[], C).await.unwrap());
    let again = stream_chunk(0, 5);
    let after_again = stream_meta(path, 5, b"mine");
    let written = engine.commit(path, 0, std::slice::from_ref(&again), &after_again, C);
    assert_eq!(
        written.await.unwrap(),
        Commit::Written,
        "the new row's tail"
    );
    assert_eq!(engine.stream_meta(path).await.unwrap(), Some(after_again));
    assert_eq!(
        engine.read_chunks(path, 0, usize::MAX).await.unwrap(),
        vec![again]
    );
    engine.close().await.unwrap();
}

/// Routes every event as a 3-byte append to `routed/s`.
struct ToStream;

impl OutboxRoute for ToStream {
    fn split(&self, _event: &[u8], _objects: &mut dyn RouteObjects) -> Routed {
        Routed {
            appends: vec![RoutedAppend {
                path: "routed/s".into(),
                data: b"abc".to_vec(),
            }],
            ..Routed::default()
        }
    }

    fn new_stream(&self, path: &str) -> sessiond_store::Result<StreamMeta> {
        Ok(stream_meta(path, 0, b""))
    }
}

/// Writes beside the streams (a session's, a cache entry's) keep what the writer remembers of
/// stream rows, but not of a stream a routed event appended to in the same write: its next
/// commit must see the routed chunk's tail, and another stream's commit still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_append_moves_the_remembered_tail() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    assert!(engine.outbox_route(Arc::new(ToStream)));
    let paths = ["routed/s", "other/s"];
    for path in paths {
        assert!(engine
            .create_stream(&stream_meta(path, 0, b""), &[], C)
            .await
            .unwrap());
    }
    // Remembered by these commits (a create forgets every stream).
    for path in paths {
        let c = stream_chunk(0, 4);
        let m = stream_meta(path, 4, b"");
        let written = engine.commit(path, 0, std::slice::from_ref(&c), &m, C);
        assert_eq!(written.await.unwrap(), Commit::Written, "{path}");
    }
    let event = Some(b"event".to_vec());
    let rec = session("routed-session", Some("user"));
    assert!(engine.insert_session_with(&rec, event, C).await.unwrap());
    engine.sweep_cache(0, 10).await.unwrap();
    for (path, tail) in [("routed/s", 7), ("other/s", 4)] {
        let c = stream_chunk(tail, 2);
        let m = stream_meta(path, tail + 2, b"");
        let written = engine.commit(path, tail, std::slice::from_ref(&c), &m, C);
        assert_eq!(written.await.unwrap(), Commit::Written, "{path} at {tail}");
        assert_eq!(engine.stream_meta(path).await.unwrap(), Some(m));
    }
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = vec![
        stream_chunk(0, 10),
        stream_chunk(10, 5),
        stream_chunk(15, 7),
    ];
    let meta = StreamMeta {
        expires_at: Some(1_000),
        ..stream_meta("kept", 22, &[0, 1, 2, 0])
    };
    let last = stream_chunk(22, 3);
    let after = StreamMeta {
        tail: 25,
        ..meta.clone()
    };
    let segment = SegmentRef {
        start: 0,
        end: 10,
        object_key: "streams/a2VwdA/seg".into(),
    };
    {
        let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
        assert!(engine
            .create_stream(&stream_meta("kept", 0, b""), &[], C)
            .await
            .unwrap());
        // Unconfirmed writes are flushed by close, too.
        let outcome = engine
            .commit("kept", 0, &chunks, &meta, Durability::Unconfirmed)
            .await
            .unwrap();
        assert_eq!(outcome, Commit::Written);
        // Only the tail changes: the row is not written, the last chunk tells the tail.
        let outcome = engine
            .commit("kept", 22, std::slice::from_ref(&last), &after, C)
            .await
            .unwrap();
        assert_eq!(outcome, Commit::Written);
        assert!(engine.seal_segment("kept", &segment, C).await.unwrap());
        engine
            .create_stream(&stream_meta("gone", 0, b""), &[], C)
            .await
            .unwrap();
        assert!(engine.delete_stream("gone", C).await.unwrap());
        engine.close().await.unwrap();
    }
    let engine: Arc<SqliteEngine> =
        SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    assert_eq!(engine.stream_meta("kept").await.unwrap(), Some(after));
    let mut hot = chunks[1..].to_vec();
    hot.push(last);
    assert_eq!(
        engine.read_chunks("kept", 0, usize::MAX).await.unwrap(),
        hot
    );
    assert_eq!(engine.segments("kept").await.unwrap(), vec![segment]);
    assert!(engine.stream_meta("gone").await.unwrap().is_none());
    assert_eq!(
        engine.list_streams("", None, 10).await.unwrap(),
        vec!["kept".to_string()]
    );
    assert_eq!(
        engine.expired_streams(1_000, 10).await.unwrap(),
        vec!["kept".to_string()]
    );
    engine.close().await.unwrap();
}
