//! The shared engine suite on SQLite, plus the check that concurrent writes share commits.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_store::testsuite::{run_all, session};
use sessiond_store::{Durability, SessionStore, Stores};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_engine_passes_the_shared_suite() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    let stores = Stores::from_engine(engine.clone())
        .with_streams(engine.clone())
        .with_stream_wakes(engine.clone());
    assert_eq!(stores.admin.name(), "sqlite");
    run_all(stores.clone()).await;
    stores.admin.close().await.unwrap();
    assert!(
        stores.admin.ping().await.is_err(),
        "closed engine refuses reads"
    );
    let late = session("after-close", None);
    assert!(
        stores
            .sessions
            .insert_session(&late, Durability::Confirmed)
            .await
            .is_err(),
        "closed engine refuses writes"
    );
}

/// Polls every future until all are done. All of them get their first poll in one pass, so all
/// writes are queued within microseconds of each other, while a commit takes an fsync.
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    let before = engine.stats();
    let records: Vec<_> = (0..500)
        .map(|i| session(&format!("batch-{i}"), Some("u")))
        .collect();
    let writes = records
        .iter()
        .map(|r| engine.insert_session(r, Durability::Confirmed))
        .collect();
    let inserted = join_all(writes).await;
    assert!(
        inserted.into_iter().all(|r| r.unwrap()),
        "every insert succeeded"
    );
    let stats = engine.stats();
    let (commits, writes) = (stats.commits - before.commits, stats.writes - before.writes);
    eprintln!("500 writes in {commits} commits");
    assert_eq!(writes, 500);
    assert!(
        commits * 10 <= writes,
        "500 writes took {commits} commits: not batched"
    );
    // Every acknowledged write is visible to readers.
    let listed = engine
        .list_user_sessions("u", sessiond_store::now_ms(), 1000)
        .await
        .unwrap();
    assert_eq!(listed.len(), 500);
    sessiond_store::EngineAdmin::close(&*engine).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_failing_command_does_not_abort_its_batch() {
    // A record whose version does not fit SQLite's INTEGER fails alone; the others commit.
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    let mut bad = session("bad", None);
    bad.version = u64::MAX;
    let good: Vec<_> = (0..20)
        .map(|i| session(&format!("good-{i}"), None))
        .collect();
    let mut writes: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> = good
        .iter()
        .map(|r| Box::pin(engine.insert_session(r, Durability::Unconfirmed)) as Pin<Box<_>>)
        .collect();
    writes.insert(
        10,
        Box::pin(engine.insert_session(&bad, Durability::Confirmed)),
    );
    let results = join_all(writes).await;
    assert!(results[10].is_err(), "the bad write reports its error");
    assert_eq!(results.iter().filter(|r| matches!(r, Ok(true))).count(), 20);
    let now = sessiond_store::now_ms();
    for r in &good {
        assert!(engine.get_session(&r.id, now).await.unwrap().is_some());
    }
    assert!(engine.get_session("bad", now).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_write_queue_makes_callers_wait_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        max_queued_writes: 3,
        ..SqliteOptions::default()
    };
    let engine = SqliteEngine::open(dir.path(), options).unwrap();
    let records: Vec<_> = (0..200)
        .map(|i| session(&format!("queued-{i}"), Some("q")))
        .collect();
    let writes = records
        .iter()
        .map(|r| engine.insert_session(r, Durability::Confirmed))
        .collect();
    let inserted = join_all(writes).await;
    assert!(
        inserted.into_iter().all(|r| r.unwrap()),
        "every write succeeded despite the 3-slot queue"
    );
    let stats = engine.stats();
    assert!(stats.writes >= 200);
    assert!(
        stats.commits * 3 >= stats.writes,
        "at most 3 writes per batch: the bound held"
    );
    let listed = engine
        .list_user_sessions("q", sessiond_store::now_ms(), 1000)
        .await
        .unwrap();
    assert_eq!(listed.len(), 200);
    sessiond_store::EngineAdmin::close(&*engine).await.unwrap();
}
