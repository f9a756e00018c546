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
        let outcome = append(s, &created, tail, len).await;
        assert_eq!(outcome, Commit::Written, "{how:?}");
        tail += len as u64;
    }
    let stored = s.stream_meta(&path).await.expect("store call");
    assert_eq!(stored.map(|m| m.tail), Some(25), "{how:?}: after appends");
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
            let trimmed = s
                .trim_stream(&path, 25, 10, None, C)
                .await
                .expect("store call");
            assert_eq!(trimmed.map(|t| (t.start, t.chunks)), Some((25, 3)));
        }
        Removal::Drop => {
            assert!(s.drop_chunks(&path, &[20], C).await.expect("store call"));
        }
    }
    let read = s.read_chunks(&path, 0, usize::MAX).await;
    assert!(
        read.expect("store call").iter().all(|c| c.end() < 25),
        "{how:?}: the last chunk is gone"
    );
    let stored = s.stream_meta(&path).await.expect("store call");
    assert_eq!(stored.map(|m| m.tail), Some(25), "{how:?}: the tail stays");
    // The next commit is checked against that tail.
    let behind = append(s, &created, 20, 5).await;
    assert_eq!(behind, Commit::Conflict, "{how:?}");
    let next = append(s, &created, 25, 3).await;
    assert_eq!(next, Commit::Written, "{how:?}");
    let stored = s.stream_meta(&path).await.expect("store call");
    assert_eq!(stored.map(|m| m.tail), Some(28), "{how:?}");
}

/// Commits `len` bytes at `at` to the stream `created` describes, its metadata unchanged but
/// for the tail.
async fn append(s: &dyn StreamStore, created: &StreamMeta, at: u64, len: usize) -> Commit {
    let c = chunk(at, len);
    let next = StreamMeta {
        tail: c.end(),
        ..created.clone()
    };
    s.commit(&created.path, at, &[c], &next, C)
        .await
        .expect("store call")
}
