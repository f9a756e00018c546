//! The suite's checks of what a stream keeps besides its log: idempotent producer rows
//! (written with a commit, capped with least-recently-used eviction, gone with the stream)
//! and fork creation and deletion, which rewrite the source's state in the same transaction
//! whatever its tail (appends to the source never refuse a fork).

use super::stream_fixtures::{chunk, meta};
use super::{unique, C};
use crate::streams::{Commit, ForkSource, ProducerRecord, ProducerUpdate, StreamMeta, StreamStore};
use crate::Millis;

/// Runs the checks against one engine.
pub async fn run_stream_links(s: &dyn StreamStore) {
    producers_ride_on_commits(s).await;
    producers_are_capped_least_recently_used_first(s).await;
    producers_are_listed_by_id(s).await;
    fork_and_source_commit_together(s).await;
}

fn record(id: &str, state: &[u8], used_at: i64) -> ProducerRecord {
    ProducerRecord {
        id: id.to_owned(),
        state: state.to_vec(),
        used_at,
    }
}

/// Commits `len` bytes after `tail` with the given producer rows; returns the new tail.
async fn commit(s: &dyn StreamStore, path: &str, tail: u64, update: ProducerUpdate) -> u64 {
    let c = chunk(tail, 3);
    let end = c.end();
    let outcome = s
        .commit_enqueue(path, tail, vec![c], meta(path, end, b"m"), update, C)
        .await
        .expect("enqueue")
        .await
        .expect("commit");
    assert_eq!(outcome, Commit::Written);
    end
}

async fn producer(s: &dyn StreamStore, path: &str, id: &str) -> Option<ProducerRecord> {
    s.stream_producer(path, id).await.expect("store call")
}

async fn producers_ride_on_commits(s: &dyn StreamStore) {
    let path = unique("st-prod");
    assert!(s
        .create_stream(&meta(&path, 0, b"m"), &[], C)
        .await
        .expect("create"));
    assert_eq!(producer(s, &path, "p").await, None, "a new stream has none");
    let one = |state: &[u8], at| ProducerUpdate {
        upsert: vec![record("p", state, at)],
        max_producers: 0,
    };
    let tail = commit(s, &path, 0, one(b"1", 10)).await;
    assert_eq!(producer(s, &path, "p").await, Some(record("p", b"1", 10)));
    let tail = commit(s, &path, tail, one(b"2", 20)).await;
    assert_eq!(
        producer(s, &path, "p").await,
        Some(record("p", b"2", 20)),
        "an upsert replaces the row"
    );
    // A commit that loses its tail check writes no producer row either.
    let lost = s
        .commit_enqueue(
            &path,
            0,
            vec![chunk(0, 1)],
            meta(&path, 1, b"x"),
            one(b"lost", 30),
            C,
        )
        .await
        .expect("enqueue")
        .await
        .expect("commit");
    assert_eq!(lost, Commit::Conflict);
    assert_eq!(producer(s, &path, "p").await, Some(record("p", b"2", 20)));
    // A plain commit leaves producer rows alone.
    let m = meta(&path, tail, b"closed");
    assert_eq!(
        s.commit(&path, tail, &[], &m, C).await.expect("commit"),
        Commit::Written
    );
    assert_eq!(producer(s, &path, "p").await, Some(record("p", b"2", 20)));
    // Deleting the stream deletes its producers; a recreated path starts with none.
    assert!(s.delete_stream(&path, C).await.expect("delete"));
    assert!(s
        .create_stream(&meta(&path, 0, b"m"), &[], C)
        .await
        .expect("create"));
    assert_eq!(producer(s, &path, "p").await, None);
    assert_eq!(producer(s, "st-prod-never-created", "p").await, None);
}

/// Listing pages through a stream's rows in id (byte) order, after the given id; rows of
/// other streams never show, and an unknown stream lists nothing.
async fn producers_are_listed_by_id(s: &dyn StreamStore) {
    let path = unique("st-prod-list");
    let other = unique("st-prod-list-other");
    for p in [&path, &other] {
        assert!(s
            .create_stream(&meta(p, 0, b"m"), &[], C)
            .await
            .expect("create"));
    }
    assert!(s
        .list_stream_producers(&path, None, 10)
        .await
        .expect("list")
        .is_empty());
    // Written out of order, in two commits; "B" sorts before "a" byte-wise.
    let rows = [
        record("c", b"3", 30),
        record("a", b"1", 10),
        record("B", b"0", 5),
    ];
    let tail = commit(
        s,
        &path,
        0,
        ProducerUpdate {
            upsert: rows[..2].to_vec(),
            max_producers: 0,
        },
    )
    .await;
    commit(
        s,
        &path,
        tail,
        ProducerUpdate {
            upsert: vec![rows[2].clone(), record("a", b"1b", 40)],
            max_producers: 0,
        },
    )
    .await;
    let upd = ProducerUpdate {
        upsert: vec![record("b-other", b"x", 1)],
        max_producers: 0,
    };
    commit(s, &other, 0, upd).await;
    let path = path.as_str();
    let list = |after: Option<&'static str>, limit| async move {
        s.list_stream_producers(path, after, limit)
            .await
            .expect("list")
    };
    let all = vec![
        record("B", b"0", 5),
        record("a", b"1b", 40),
        record("c", b"3", 30),
    ];
    assert_eq!(list(None, 10).await, all);
    assert_eq!(list(None, 2).await, all[..2].to_vec(), "first page");
    assert_eq!(list(Some("a"), 2).await, all[2..].to_vec(), "after an id");
    assert_eq!(
        list(Some("b"), 2).await,
        all[2..].to_vec(),
        "after a missing id"
    );
    assert!(list(Some("c"), 2).await.is_empty(), "past the end");
    assert!(list(None, 0).await.is_empty(), "limit 0");
    assert!(s
        .list_stream_producers("st-prod-list-never-created", None, 10)
        .await
        .expect("list")
        .is_empty());
}

async fn producers_are_capped_least_recently_used_first(s: &dyn StreamStore) {
    let path = unique("st-prod-cap");
    assert!(s
        .create_stream(&meta(&path, 0, b"m"), &[], C)
        .await
        .expect("create"));
    let mut tail = 0;
    // p0..p3 used at 0, 10, 20, 30 (p2 then again at 40), cap 3.
    for (id, at) in [("p0", 0), ("p1", 10), ("p2", 20), ("p2", 40), ("p3", 30)] {
        let update = ProducerUpdate {
            upsert: vec![record(id, id.as_bytes(), at)],
            max_producers: 3,
        };
        tail = commit(s, &path, tail, update).await;
    }
    assert_eq!(producer(s, &path, "p0").await, None, "least recently used");
    for id in ["p1", "p2", "p3"] {
        assert!(producer(s, &path, id).await.is_some(), "{id} kept");
    }
    // A row written by the commit is never its victim, even with the oldest `used_at`; ties
    // go by id.
    let update = ProducerUpdate {
        upsert: vec![record("a-old", b"x", -5), record("b-old", b"y", -5)],
        max_producers: 2,
    };
    commit(s, &path, tail, update).await;
    for id in ["p1", "p2", "p3"] {
        assert_eq!(producer(s, &path, id).await, None, "{id} evicted");
    }
    assert!(producer(s, &path, "a-old").await.is_some());
    assert!(producer(s, &path, "b-old").await.is_some());
}

/// The source side of a fork: `state` and `expires_at` to write, `expected` to require.
fn link(
    src: &str,
    state: &[u8],
    expires_at: Option<Millis>,
    expected: Option<&[u8]>,
) -> ForkSource {
    ForkSource {
        path: src.to_owned(),
        state: state.to_vec(),
        expires_at,
        expected_state: expected.map(<[u8]>::to_vec),
        max_start: None,
    }
}

/// Appends 3 bytes to `path` at `tail`, keeping its state `state` (a plain append, as another
/// node's between a fork's read of its source and its commit); returns the new tail.
async fn append(s: &dyn StreamStore, path: &str, tail: u64, state: &[u8]) -> u64 {
    let c = chunk(tail, 3);
    let end = c.end();
    let written = s.commit(path, tail, &[c], &meta(path, end, state), C).await;
    assert_eq!(written.expect("commit"), Commit::Written);
    end
}

async fn fork_and_source_commit_together(s: &dyn StreamStore) {
    let (src, fork) = (unique("st-fork-src"), unique("st-fork"));
    assert!(s
        .create_stream(&meta(&src, 4, b"src"), &[chunk(0, 4)], C)
        .await
        .expect("create"));
    let counted = link(&src, b"src+1", Some(60), Some(b"src"));
    // A missing source refuses the whole fork.
    let missing = ForkSource {
        path: unique("st-fork-none"),
        ..counted.clone()
    };
    let fork_meta = meta(&fork, 6, b"fork");
    assert!(!s
        .create_fork(&fork_meta, &[chunk(4, 2)], &missing, C)
        .await
        .expect("fork"));
    assert!(s.stream_meta(&fork).await.expect("meta").is_none());
    // An append moved the source's tail since the fork was decided: the fork does not depend
    // on it. Both are written; the source keeps its stored tail and start.
    let tail = append(s, &src, 4, b"src").await;
    assert!(s
        .create_fork(&fork_meta, &[chunk(4, 2)], &counted, C)
        .await
        .expect("fork"));
    let forked = |tail: u64, start: u64, state: &[u8], expires_at: Option<Millis>| {
        Some(StreamMeta {
            start,
            expires_at,
            ..meta(&src, tail, state)
        })
    };
    assert_eq!(
        s.stream_meta(&src).await.expect("meta"),
        forked(tail, 0, b"src+1", Some(60))
    );
    assert!(s
        .expired_streams(60, 100_000)
        .await
        .expect("expired")
        .contains(&src));
    assert_eq!(
        s.stream_meta(&fork).await.expect("meta"),
        Some(fork_meta.clone())
    );
    let read = s.read_chunks(&fork, 0, 1 << 20).await.expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].data, chunk(4, 2).data);
    // An existing fork path refuses, and the source is left alone.
    let again = link(&src, b"src+2", None, None);
    assert!(!s
        .create_fork(&fork_meta, &[], &again, C)
        .await
        .expect("fork"));
    assert_eq!(
        s.stream_meta(&src).await.expect("meta"),
        forked(tail, 0, b"src+1", Some(60))
    );

    // Deleting the fork rewrites the source's state in the same step, whatever its tail and
    // start became meanwhile.
    let tail = append(s, &src, tail, b"src+1").await;
    let trimmed = s.trim_stream(&src, 4, 10, None, C).await.expect("trim");
    assert_eq!(trimmed.map(|t| t.start), Some(4));
    let released = link(&src, b"src+0", None, None);
    assert!(s.delete_fork(&fork, &released, C).await.expect("delete"));
    assert!(s.stream_meta(&fork).await.expect("meta").is_none());
    assert!(s
        .read_chunks(&fork, 0, 1 << 20)
        .await
        .expect("read")
        .is_empty());
    assert_eq!(
        s.stream_meta(&src).await.expect("meta"),
        forked(tail, 4, b"src+0", None)
    );
    assert!(!s
        .expired_streams(60, 100_000)
        .await
        .expect("expired")
        .contains(&src));
    // A fork that is gone changes nothing.
    let again = link(&src, b"src-1", None, None);
    assert!(!s.delete_fork(&fork, &again, C).await.expect("delete"));
    assert_eq!(
        s.stream_meta(&src).await.expect("meta").map(|m| m.state),
        Some(b"src+0".to_vec())
    );
    // A missing source refuses the deletion too (the fork stays).
    assert!(s
        .create_fork(&fork_meta, &[], &link(&src, b"src+1", None, None), C)
        .await
        .expect("fork"));
    assert!(!s.delete_fork(&fork, &missing, C).await.expect("delete"));
    assert!(s.stream_meta(&fork).await.expect("meta").is_some());
    assert!(s.delete_stream(&fork, C).await.expect("delete"));
    assert!(s.delete_stream(&src, C).await.expect("delete"));
}
