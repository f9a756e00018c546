//! Repair of fork operations a node left half-done on Redis Cluster (it died between two
//! steps of the protocol in `stream_forks.rs`): the next reader finishes or aborts them.
//! The half-done states are written with raw commands, exactly as a dead node leaves them.
#![allow(clippy::unwrap_used)]

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use sessiond_engine_redis::keys::Keys;
use sessiond_engine_redis::testing::RedisCluster;
use sessiond_engine_redis::{RedisEngine, RedisOptions};
use sessiond_store::testsuite::{stream_chunk, stream_meta};
use sessiond_store::{now_ms, Durability, ForkSource, StreamStore};

const C: Durability = Durability::Confirmed;

async fn raw<T: redis::FromRedisValue>(con: &mut ClusterConnection, cmd: &redis::Cmd) -> T {
    cmd.query_async(con).await.unwrap()
}

/// Writes fork `path` as step 1 left it: the stream with a `pend` field.
async fn half_done(
    e: &RedisEngine,
    con: &mut ClusterConnection,
    keys: &Keys,
    path: &str,
    pend: String,
) {
    assert!(e
        .create_stream(&stream_meta(path, 2, b"fork"), &[stream_chunk(0, 2)], C)
        .await
        .unwrap());
    let [m, ..] = keys.stream(path);
    let _: i64 = raw(con, redis::cmd("HSET").arg(m).arg("pend").arg(pend)).await;
}

#[tokio::test]
async fn half_done_forks_are_finished_or_aborted_by_readers() {
    let cluster = RedisCluster::start();
    let e = RedisEngine::connect_cluster(&cluster.urls(), RedisOptions::default())
        .await
        .unwrap();
    let mut con = ClusterClient::new(cluster.urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let keys = Keys::new("sessiond");
    assert!(e
        .create_stream(&stream_meta("src", 2, b"src+0"), &[stream_chunk(0, 2)], C)
        .await
        .unwrap());
    let links = keys.stream_fork_links("src");
    let future = now_ms() + 60_000;
    let past = now_ms() - 1;

    // Creation in flight (before its deadline, source not linked yet): invisible.
    half_done(&e, &mut con, &keys, "f1", format!("n1 {future} c src")).await;
    assert_eq!(e.stream_meta("f1").await.unwrap(), None);
    // The source linked it, then the creator died: the reader finishes it.
    let _: i64 = raw(
        &mut con,
        redis::cmd("HSET").arg(&links).arg("n1").arg("live f1"),
    )
    .await;
    let got = e.stream_meta("f1").await.unwrap().unwrap();
    assert_eq!((got.tail, got.state.as_slice()), (2, &b"fork"[..]));
    let pend: Option<String> = raw(
        &mut con,
        redis::cmd("HGET").arg(&keys.stream("f1")[0]).arg("pend"),
    )
    .await;
    assert_eq!(pend, None, "finished: no longer pending");
    let entry: Option<String> = raw(&mut con, redis::cmd("HGET").arg(&links).arg("n1")).await;
    assert_eq!(entry, None, "the source forgot the committed link");
    assert_eq!(e.list_streams("f", None, 10).await.unwrap(), ["f1"]);

    // A creation past its deadline, never linked: aborted (fork deleted, tombstone on the
    // source, so a late link of that nonce would be refused).
    half_done(&e, &mut con, &keys, "f2", format!("n2 {past} c src")).await;
    assert_eq!(e.stream_meta("f2").await.unwrap(), None);
    let exists: i64 = raw(&mut con, redis::cmd("EXISTS").arg(&keys.stream("f2")[0])).await;
    assert_eq!(exists, 0, "aborted creation deleted");
    let entry: Option<String> = raw(&mut con, redis::cmd("HGET").arg(&links).arg("n2")).await;
    assert_eq!(entry.as_deref(), Some("dead"));
    // The path is free again for a real fork.
    let source = ForkSource {
        path: "src".into(),
        state: b"src+1".to_vec(),
        expires_at: None,
        expected_state: Some(b"src+0".to_vec()),
        max_start: None,
    };
    assert!(e
        .create_fork(&stream_meta("f2", 2, b"fork"), &[], &source, C)
        .await
        .unwrap());
    assert!(e.stream_meta("f2").await.unwrap().is_some());

    // Deletion in flight: the fork still exists; once linked, the reader finishes it.
    let [f1m, ..] = keys.stream("f1");
    let _: i64 = raw(
        &mut con,
        redis::cmd("HSET")
            .arg(&f1m)
            .arg("pend")
            .arg(format!("n3 {future} d src")),
    )
    .await;
    assert!(e.stream_meta("f1").await.unwrap().is_some());
    let _: i64 = raw(
        &mut con,
        redis::cmd("HSET").arg(&links).arg("n3").arg("live f1"),
    )
    .await;
    assert_eq!(
        e.stream_meta("f1").await.unwrap(),
        None,
        "deletion finished"
    );
    assert_eq!(e.list_streams("f", None, 10).await.unwrap(), ["f2"]);

    // Deletion past its deadline, never linked: aborted, the fork stays.
    let [f2m, ..] = keys.stream("f2");
    let _: i64 = raw(
        &mut con,
        redis::cmd("HSET")
            .arg(&f2m)
            .arg("pend")
            .arg(format!("n4 {past} d src")),
    )
    .await;
    assert!(e.stream_meta("f2").await.unwrap().is_some());
    let pend: Option<String> = raw(&mut con, redis::cmd("HGET").arg(&f2m).arg("pend")).await;
    assert_eq!(pend, None, "aborted deletion cleared");

    // Deleting the source takes its fork links with it.
    assert!(e.delete_stream("src", C).await.unwrap());
    let exists: i64 = raw(&mut con, redis::cmd("EXISTS").arg(&links)).await;
    assert_eq!(exists, 0);
}
