//! The tail outlives the chunk that ends it: after plain appends (metadata unchanged apart
//! from the tail), a seal, a trim or a compaction that deletes the last chunk leaves the tail
//! where it was, and the next commit is checked against it. (An engine may keep the tail only
//! in its last chunk until the stream's row is written for another reason; SQLite does.)

use super::stream_fixtures::{chunk, meta};
use super::{unique, C};
use crate::streams::{Commit, SegmentRef, StreamMeta, StreamStore};

/// Runs the tail checks.
pub async fn run_stream_tail(s: &dyn StreamStore) {
    for how in [Removal::Seal, Removal::Trim, Removal::Drop] {
        tail_outlives_its_chunk(s, how).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Removal {
    Seal,
    Trim,
    Drop,
}

async fn tail_outlives_its_chunk(s: &dyn StreamStore, how: Removal) {
    let path = unique("st-tail");
    let created = meta(&path, 0, b"same state");
    assert!(s.create_stream(&created, &[], C).await.expect("store call"));
    // Three appends that change only the tail.
    let mut tail = 0;
    for len in [10, 10, 5] {
        let c = chunk(tail, len);
        let next = StreamMeta {
            tail: c.end(),
            ..created.clone()
        };
        let outcome = s.commit(&path, tail, &[c], &next, C).await;
        assert_eq!(outcome.expect("store call"), Commit::Written, "{how:?}");
        tail = next.tail;
    }
    let stored = s.stream_meta(&path).await.expect("store call");
    assert_eq!(
        stored.map(|m| m.tail),
        Some(25),
        "{how:?}: tail after appends"
    );
    match how {
        Removal::Seal => {
            let all = SegmentRef {
                start: 0,
                end: 25,
                object_key: format!("seg/{path}/0-25"),
            };
            assert!(s.seal_segment(&path, &all, C).await.expect("store call"));
        }
        Removal::Trim => {
            let trimmed = s.trim_stream(&path, 25, 10, C).await.expect("store call");
            assert_eq!(trimmed.map(|t| (t.start, t.chunks)), Some((25, 3)));
        }
        Removal::Drop => {
            assert!(s.drop_chunks(&path, &[20], C).await.expect("store call"));
        }
    }
    let read = s
        .read_chunks(&path, 0, usize::MAX)
        .await
        .expect("store call");
    assert!(
        read.iter().all(|c| c.end() < 25),
        "{how:?}: the last chunk is gone"
    );
    let stored = s.stream_meta(&path).await.expect("store call");
    assert_eq!(stored.map(|m| m.tail), Some(25), "{how:?}: the tail stays");
    // The next commit is checked against that tail.
    let behind = chunk(20, 5);
    let at_20 = StreamMeta {
        tail: 25,
        ..created.clone()
    };
    let refused = s.commit(&path, 20, &[behind], &at_20, C).await;
    assert_eq!(refused.expect("store call"), Commit::Conflict, "{how:?}");
    let next = chunk(25, 3);
    let after = StreamMeta {
        tail: 28,
        ..created.clone()
    };
    let written = s.commit(&path, 25, &[next], &after, C).await;
    assert_eq!(written.expect("store call"), Commit::Written, "{how:?}");
    let stored = s.stream_meta(&path).await.expect("store call");
    assert_eq!(stored.map(|m| m.tail), Some(28), "{how:?}");
}
