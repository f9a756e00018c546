//! The shared suite's checks of [`StreamStore`]: the contract the Durable Streams capability
//! and the cold tier rely on, on every engine that stores streams.
//!
//! Paths are unique per run (see `unique`), so the checks can share one engine with other
//! tests; listing checks therefore always filter by their own prefix.

use std::sync::Arc;

use super::stream_fixtures::{chunk, meta};
use super::{unique, C, HOUR};
use crate::streams::{Commit, SegmentRef, StreamChunk, StreamMeta, StreamStore};
use crate::{now_ms, Durability};

/// Runs every stream check against one engine.
pub async fn run_streams(store: Arc<dyn StreamStore>) {
    let s = store.as_ref();
    create_refuses_existing(s).await;
    commit_compare_and_set(s).await;
    super::stream_cas::run_stream_cas(s).await;
    super::stream_create::run_stream_create(s).await;
    read_paging(s).await;
    delete_and_recreate(s).await;
    listing(s).await;
    expiry(s).await;
    sealing(s).await;
    binary_and_large(s).await;
    super::pipeline::run_pipeline(s).await;
    super::stream_links::run_stream_links(s).await;
    super::retention::run_retention(s).await;
    super::compaction::run_compaction(s).await;
    super::stream_tail::run_stream_tail(s).await;
}

/// Appends `lens` after the stored tail, checking the commit is written; returns the chunks.
async fn append(s: &dyn StreamStore, path: &str, lens: &[usize]) -> Vec<StreamChunk> {
    let old = s
        .stream_meta(path)
        .await
        .expect("store call")
        .expect("store call");
    let mut tail = old.tail;
    let mut chunks = Vec::new();
    for len in lens {
        chunks.push(chunk(tail, *len));
        tail += *len as u64;
    }
    let new = StreamMeta {
        tail,
        ..old.clone()
    };
    let outcome = s
        .commit(path, old.tail, &chunks, &new, C)
        .await
        .expect("store call");
    assert_eq!(outcome, Commit::Written, "append after the stored tail");
    chunks
}

async fn create_refuses_existing(s: &dyn StreamStore) {
    let path = unique("st-create");
    assert!(s.stream_meta(&path).await.expect("store call").is_none());
    let m = meta(&path, 10, b"v1");
    assert!(s
        .create_stream(&m, &[chunk(0, 10)], C)
        .await
        .expect("store call"));
    assert_eq!(
        s.stream_meta(&path).await.expect("store call"),
        Some(m.clone())
    );
    let other = meta(&path, 3, b"v2");
    assert!(
        !s.create_stream(&other, &[chunk(0, 3)], C)
            .await
            .expect("store call"),
        "create refuses an existing path"
    );
    assert_eq!(
        s.stream_meta(&path).await.expect("store call"),
        Some(m),
        "refused create changes nothing"
    );
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        vec![chunk(0, 10)]
    );
    // An empty stream is fine too, and reads as no chunks.
    let empty = unique("st-empty");
    assert!(s
        .create_stream(&meta(&empty, 0, b""), &[], C)
        .await
        .expect("store call"));
    assert!(s
        .read_chunks(&empty, 0, 100)
        .await
        .expect("store call")
        .is_empty());
    assert!(s
        .read_chunks(&unique("st-none"), 0, 100)
        .await
        .expect("store call")
        .is_empty());
    s.delete_stream(&path, C).await.expect("store call");
    s.delete_stream(&empty, C).await.expect("store call");
}

async fn commit_compare_and_set(s: &dyn StreamStore) {
    let path = unique("st-cas");
    s.create_stream(&meta(&path, 0, b"s0"), &[], C)
        .await
        .expect("store call");
    let first = vec![chunk(0, 5), chunk(5, 3)];
    let m1 = meta(&path, 8, b"s1");
    assert_eq!(
        s.commit(&path, 0, &first, &m1, C)
            .await
            .expect("store call"),
        Commit::Written
    );
    assert_eq!(
        s.stream_meta(&path).await.expect("store call"),
        Some(m1.clone())
    );
    // A writer that still believes the tail is 0 loses, and writes nothing.
    let stale = meta(&path, 4, b"stale");
    assert_eq!(
        s.commit(&path, 0, &[chunk(0, 4)], &stale, C)
            .await
            .expect("store call"),
        Commit::Conflict
    );
    assert_eq!(
        s.stream_meta(&path).await.expect("store call"),
        Some(m1.clone())
    );
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        first
    );
    // A zero-chunk commit replaces only the metadata (e.g. close, producer state).
    let mut closed = meta(&path, 8, b"closed");
    closed.expires_at = Some(now_ms() + HOUR);
    assert_eq!(
        s.commit(&path, 8, &[], &closed, Durability::Unconfirmed)
            .await
            .expect("store call"),
        Commit::Written
    );
    assert_eq!(
        s.stream_meta(&path).await.expect("store call"),
        Some(closed)
    );
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        first
    );
    // A missing stream is a conflict, never a create.
    let ghost = unique("st-ghost");
    assert_eq!(
        s.commit(&ghost, 0, &[chunk(0, 1)], &meta(&ghost, 1, b""), C)
            .await
            .expect("store call"),
        Commit::Conflict
    );
    assert!(s.stream_meta(&ghost).await.expect("store call").is_none());
    assert!(s
        .read_chunks(&ghost, 0, 10)
        .await
        .expect("store call")
        .is_empty());
    s.delete_stream(&path, C).await.expect("store call");
}

async fn read_paging(s: &dyn StreamStore) {
    let path = unique("st-read");
    s.create_stream(&meta(&path, 0, b""), &[], C)
        .await
        .expect("store call");
    // Chunks [0,10) [10,30) [30,35) [35,135)
    let all = append(s, &path, &[10, 20, 5, 100]).await;
    let read = |from: u64, max: usize| {
        let path = path.clone();
        async move { s.read_chunks(&path, from, max).await.expect("store call") }
    };
    assert_eq!(read(0, usize::MAX).await, all, "everything in order");
    assert_eq!(
        read(10, usize::MAX).await,
        all[1..],
        "from a chunk boundary"
    );
    assert_eq!(
        read(15, usize::MAX).await,
        all[1..],
        "a chunk starting before `from` is returned whole"
    );
    assert_eq!(read(34, usize::MAX).await, all[2..]);
    assert_eq!(read(134, usize::MAX).await, all[3..]);
    assert!(read(135, usize::MAX).await.is_empty(), "at the tail");
    assert!(read(1000, usize::MAX).await.is_empty(), "past the tail");
    // Paging: stop once max_bytes are collected, but always at least one chunk.
    assert_eq!(read(0, 1).await, all[..1]);
    assert_eq!(read(0, 0).await, all[..1], "at least one chunk");
    assert_eq!(
        read(35, 1).await,
        all[3..],
        "one chunk larger than the page"
    );
    assert_eq!(read(0, 10).await, all[..1], "exactly max_bytes");
    assert_eq!(
        read(0, 11).await,
        all[..2],
        "stops once max_bytes are reached"
    );
    assert_eq!(read(12, 25).await, all[1..3]);
    // Walking pages from the end of the last chunk reassembles the stream.
    let mut from = 0;
    let mut walked = Vec::new();
    loop {
        let page = read(from, 7).await;
        let Some(last) = page.last() else { break };
        from = last.end();
        walked.extend(page);
    }
    assert_eq!(walked, all, "paging reassembles the stream");
    s.delete_stream(&path, C).await.expect("store call");
}

async fn delete_and_recreate(s: &dyn StreamStore) {
    let path = unique("st-del");
    s.create_stream(&meta(&path, 0, b"old"), &[], C)
        .await
        .expect("store call");
    let chunks = append(s, &path, &[4, 4, 4]).await;
    let seg = SegmentRef {
        start: 0,
        end: 4,
        object_key: format!("{path}/0"),
    };
    assert!(s.seal_segment(&path, &seg, C).await.expect("store call"));
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        chunks[1..]
    );
    assert!(
        s.delete_stream(&path, C).await.expect("store call"),
        "delete existing"
    );
    assert!(
        !s.delete_stream(&path, C).await.expect("store call"),
        "delete twice"
    );
    assert!(s.stream_meta(&path).await.expect("store call").is_none());
    assert!(s
        .read_chunks(&path, 0, usize::MAX)
        .await
        .expect("store call")
        .is_empty());
    assert!(
        s.segments(&path).await.expect("store call").is_empty(),
        "segments gone"
    );
    // The same path starts empty: nothing of the old incarnation shows through.
    assert!(s
        .create_stream(&meta(&path, 0, b"new"), &[], C)
        .await
        .expect("store call"));
    assert!(s
        .read_chunks(&path, 0, usize::MAX)
        .await
        .expect("store call")
        .is_empty());
    assert!(s.segments(&path).await.expect("store call").is_empty());
    let fresh = append(s, &path, &[2]).await;
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        fresh
    );
    assert_eq!(
        s.stream_meta(&path)
            .await
            .expect("store call")
            .expect("store call")
            .state,
        b"new"
    );
    s.delete_stream(&path, C).await.expect("store call");
}

async fn listing(s: &dyn StreamStore) {
    let base = unique("st-list");
    // Byte order: "é" (0xC3…) sorts after "z".
    let names = ["a", "a/b", "a/c", "b", "z", "é"];
    for n in names {
        let p = format!("{base}/{n}");
        s.create_stream(&meta(&p, 0, b""), &[], C)
            .await
            .expect("store call");
    }
    let full = |n: &str| format!("{base}/{n}");
    let list = |prefix: String, after: Option<String>, limit: usize| async move {
        s.list_streams(&prefix, after.as_deref(), limit)
            .await
            .expect("store call")
    };
    let expected: Vec<String> = names.iter().map(|n| full(n)).collect();
    assert_eq!(
        list(format!("{base}/"), None, 100).await,
        expected,
        "ascending"
    );
    assert_eq!(list(full("a"), None, 100).await, expected[..3], "prefix");
    assert_eq!(
        list(format!("{base}/"), None, 2).await,
        expected[..2],
        "limit"
    );
    assert_eq!(
        list(format!("{base}/"), Some(full("a/b")), 2).await,
        expected[2..4],
        "after is exclusive"
    );
    assert_eq!(
        list(full("a"), Some(format!("{base}/0")), 100).await,
        expected[..3],
        "after before the prefix"
    );
    assert!(list(full("a"), Some(full("b")), 100).await.is_empty());
    assert!(list(format!("{base}/q"), None, 100).await.is_empty());
    // Every page of a walk, one at a time.
    let mut after = None;
    let mut walked = Vec::new();
    while let Some(next) = list(format!("{base}/"), after.clone(), 1).await.pop() {
        walked.push(next.clone());
        after = Some(next);
    }
    assert_eq!(walked, expected);
    for p in expected {
        s.delete_stream(&p, C).await.expect("store call");
    }
    assert!(list(format!("{base}/"), None, 100).await.is_empty());
}

async fn expiry(s: &dyn StreamStore) {
    let now = now_ms();
    let soon = unique("st-exp-soon");
    let later = unique("st-exp-later");
    let never = unique("st-exp-never");
    for (p, at) in [
        (&soon, Some(now + HOUR)),
        (&later, Some(now + 2 * HOUR)),
        (&never, None),
    ] {
        let mut m = meta(p, 0, b"");
        m.expires_at = at;
        s.create_stream(&m, &[], C).await.expect("store call");
    }
    let mine = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|p| [&soon, &later, &never].contains(&p))
            .collect()
    };
    assert!(mine(s.expired_streams(now, 10_000).await.expect("store call")).is_empty());
    assert_eq!(
        mine(
            s.expired_streams(now + HOUR, 10_000)
                .await
                .expect("store call")
        ),
        vec![soon.clone()],
        "at the deadline counts as expired"
    );
    let mut both = mine(
        s.expired_streams(now + 3 * HOUR, 10_000)
            .await
            .expect("store call"),
    );
    both.sort();
    let mut want = vec![soon.clone(), later.clone()];
    want.sort();
    assert_eq!(both, want, "never-expiring streams are never listed");
    assert!(
        s.expired_streams(now + 3 * HOUR, 1)
            .await
            .expect("store call")
            .len()
            <= 1
    );
    // A commit that moves the deadline (a sliding TTL refresh) is what the index sees.
    let mut m = s
        .stream_meta(&soon)
        .await
        .expect("store call")
        .expect("store call");
    m.expires_at = Some(now + 5 * HOUR);
    assert_eq!(
        s.commit(&soon, 0, &[], &m, C).await.expect("store call"),
        Commit::Written
    );
    assert_eq!(
        mine(
            s.expired_streams(now + 3 * HOUR, 10_000)
                .await
                .expect("store call")
        ),
        vec![later.clone()]
    );
    // Engines report expired streams; whether they are gone is the capability's decision.
    assert!(s.stream_meta(&later).await.expect("store call").is_some());
    for p in [&soon, &later, &never] {
        s.delete_stream(p, C).await.expect("store call");
    }
}

async fn sealing(s: &dyn StreamStore) {
    let path = unique("st-seal");
    s.create_stream(&meta(&path, 0, b""), &[], C)
        .await
        .expect("store call");
    // [0,10) [10,20) [20,30) [30,40) [40,50)
    let all = append(s, &path, &[10, 10, 10, 10, 10]).await;
    assert!(s.segments(&path).await.expect("store call").is_empty());
    let seg = |start: u64, end: u64| SegmentRef {
        start,
        end,
        object_key: format!("seg/{path}/{start}-{end}"),
    };
    assert!(s
        .seal_segment(&path, &seg(0, 20), C)
        .await
        .expect("store call"));
    assert_eq!(
        s.segments(&path).await.expect("store call"),
        vec![seg(0, 20)]
    );
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        all[2..],
        "exactly the covered hot chunks are gone"
    );
    assert_eq!(
        s.read_chunks(&path, 25, usize::MAX)
            .await
            .expect("store call"),
        all[2..]
    );
    assert!(s
        .seal_segment(&path, &seg(20, 30), C)
        .await
        .expect("store call"));
    assert_eq!(
        s.segments(&path).await.expect("store call"),
        vec![seg(0, 20), seg(20, 30)],
        "segments in offset order"
    );
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        all[3..]
    );
    // Sealing changes neither metadata nor appends.
    assert_eq!(
        s.stream_meta(&path)
            .await
            .expect("store call")
            .expect("store call")
            .tail,
        50
    );
    let more = append(s, &path, &[1]).await;
    let mut hot = all[3..].to_vec();
    hot.extend(more);
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        hot
    );
    // A missing stream cannot be sealed.
    let ghost = unique("st-seal-ghost");
    assert!(!s
        .seal_segment(&ghost, &seg(0, 10), C)
        .await
        .expect("store call"));
    assert!(s.segments(&ghost).await.expect("store call").is_empty());
    s.delete_stream(&path, C).await.expect("store call");
}

async fn binary_and_large(s: &dyn StreamStore) {
    let path = unique("st-bin");
    let nul = StreamChunk {
        offset: 0,
        data: vec![0, 0, 255, 0, b'\n', 0xC3, 0x28, 0],
    };
    let m = meta(&path, 8, &[0, 1, 0, 255]);
    s.create_stream(&m, std::slice::from_ref(&nul), C)
        .await
        .expect("store call");
    assert_eq!(
        s.stream_meta(&path).await.expect("store call"),
        Some(m),
        "binary state"
    );
    assert_eq!(
        s.read_chunks(&path, 0, 1).await.expect("store call"),
        vec![nul.clone()]
    );
    // 4 MiB in one chunk (a full read page), then a small one after it.
    let big = chunk(8, 4 << 20);
    let tail = big.end() + 3;
    let small = chunk(big.end(), 3);
    let next = meta(&path, tail, b"big");
    assert_eq!(
        s.commit(&path, 8, &[big.clone(), small.clone()], &next, C)
            .await
            .expect("store call"),
        Commit::Written
    );
    assert_eq!(
        s.read_chunks(&path, 9, 1).await.expect("store call"),
        vec![big.clone()],
        "a large chunk comes back whole"
    );
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        vec![nul, big, small]
    );
    s.delete_stream(&path, C).await.expect("store call");
}
