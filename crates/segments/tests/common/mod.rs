//! Helpers shared by the cold-tier tests: a stream with varied chunks, reads that span cold
//! and hot the way the streams capability does, and the round-trip check.
#![allow(clippy::unwrap_used, dead_code)]

use sessiond_segments::{ColdTier, CompactionPolicy};
use sessiond_store::{Commit, Durability, StreamChunk, StreamMeta, StreamStore};

const C: Durability = Durability::Confirmed;

/// Creates `path` with `n` chunks of 1..=700 bytes (NULs and every byte value included).
pub async fn fill(store: &dyn StreamStore, path: &str, n: usize) -> Vec<StreamChunk> {
    let meta = |tail| StreamMeta {
        path: path.to_string(),
        tail,
        expires_at: None,
        state: b"state".to_vec(),
        start: 0,
    };
    assert!(store.create_stream(&meta(0), &[], C).await.unwrap());
    let mut tail = 0u64;
    let mut all = Vec::new();
    for i in 0..n {
        let len = 1 + (i * 7919) % 700;
        let data: Vec<u8> = (0..len).map(|j| ((i * 31 + j) % 256) as u8).collect();
        let c = StreamChunk { offset: tail, data };
        let outcome = store
            .commit(path, tail, std::slice::from_ref(&c), &meta(c.end()), C)
            .await
            .unwrap();
        assert_eq!(outcome, Commit::Written);
        tail = c.end();
        all.push(c);
    }
    all
}

/// One page from `from`: sealed segments first, the hot log once `from` is past them.
pub async fn page(
    tier: &ColdTier,
    store: &dyn StreamStore,
    path: &str,
    from: u64,
    max: usize,
) -> Vec<StreamChunk> {
    let cold = tier.read(store, path, from, max).await.unwrap();
    if !cold.is_empty() {
        return cold;
    }
    store.read_chunks(path, from, max).await.unwrap()
}

/// The whole stream from `from`, page by page.
pub async fn read_all(
    tier: &ColdTier,
    store: &dyn StreamStore,
    path: &str,
    from: u64,
    max: usize,
) -> Vec<StreamChunk> {
    let mut from = from;
    let mut out = Vec::new();
    loop {
        let p = page(tier, store, path, from, max).await;
        let Some(last) = p.last() else { return out };
        from = last.end();
        out.extend(p);
    }
}

/// Test policy: small segments, a 5,000-byte hot tail, size-triggered only.
pub fn policy() -> CompactionPolicy {
    CompactionPolicy {
        min_segment_bytes: 10_000,
        max_segment_bytes: 16_000,
        max_age: None,
        keep_hot_bytes: 5_000,
        ..CompactionPolicy::default()
    }
}

/// Fills a stream, compacts it until nothing is due, and checks that every read (whole
/// stream, and from offsets inside and between chunks) returns exactly what it returned
/// before compaction. Returns the stream's chunks.
pub async fn round_trip(tier: &ColdTier, store: &dyn StreamStore, path: &str) -> Vec<StreamChunk> {
    let all = fill(store, path, 300).await;
    let tail = all.last().unwrap().end();
    let before = read_all(tier, store, path, 0, 4096).await;
    assert_eq!(before, all);
    let policy = policy();
    let mut sealed = Vec::new();
    while let Some(seg) = tier.compact_stream(store, path, &policy).await.unwrap() {
        sealed.push(seg);
    }
    assert!(
        sealed.len() >= 3,
        "expected several segments, got {sealed:?}"
    );
    assert_eq!(store.segments(path).await.unwrap(), sealed);
    for pair in sealed.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "segments are contiguous");
    }
    assert_eq!(sealed[0].start, 0);
    let last_end = sealed.last().unwrap().end;
    assert!(
        last_end <= tail - policy.keep_hot_bytes,
        "the hot tail stays hot"
    );
    let hot = store.read_chunks(path, 0, usize::MAX).await.unwrap();
    assert_eq!(
        hot.first().unwrap().offset,
        last_end,
        "sealed chunks left the hot log"
    );

    assert_eq!(
        read_all(tier, store, path, 0, 4096).await,
        all,
        "cold + hot = before"
    );
    assert_eq!(
        read_all(tier, store, path, 0, 1).await,
        all,
        "one chunk per page"
    );
    let mut froms: Vec<u64> = vec![0, 1, last_end - 1, last_end, last_end + 1, tail - 1];
    froms.extend(sealed.iter().flat_map(|s| [s.start, s.end - 1]));
    froms.extend(
        all.iter()
            .step_by(37)
            .map(|c| c.offset + c.data.len() as u64 / 2),
    );
    for from in froms {
        let expected: Vec<StreamChunk> = all.iter().filter(|c| c.end() > from).cloned().collect();
        assert_eq!(
            read_all(tier, store, path, from, 3000).await,
            expected,
            "from {from}"
        );
    }
    assert!(page(tier, store, path, tail, 100).await.is_empty());
    assert!(tier
        .read(store, path, last_end, 100)
        .await
        .unwrap()
        .is_empty());
    all
}
