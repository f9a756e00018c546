//! The shared suite's checks of [`StreamStore::trim_stream`]: the retained start only rises,
//! whole chunks and segments below it go in bounded batches, a straddling chunk stays, commits
//! never lower the start, and offsets of retained data never change. Trims and forks decided
//! on stale metadata (another node forked or trimmed meanwhile) are refused and write nothing.

use super::stream_fixtures::{chunk, meta};
use super::{unique, C};
use crate::streams::{Commit, ForkSource, SegmentRef, StreamMeta, StreamStore, Trimmed};

/// Runs every retention check against one engine.
pub async fn run_retention(s: &dyn StreamStore) {
    trim_in_batches(s).await;
    start_survives_commits(s).await;
    trims_compare_the_state(s).await;
    forks_compare_the_start(s).await;
}

async fn stored(s: &dyn StreamStore, path: &str) -> StreamMeta {
    s.stream_meta(path)
        .await
        .expect("store call")
        .expect("stream exists")
}

async fn trim(s: &dyn StreamStore, path: &str, before: u64, max: usize) -> Trimmed {
    s.trim_stream(path, before, max, None, C)
        .await
        .expect("store call")
        .expect("stream exists")
}

async fn trim_in_batches(s: &dyn StreamStore) {
    let path = unique("st-trim");
    let all: Vec<_> = (0..8).map(|i| chunk(i * 10, 10)).collect();
    assert!(s
        .create_stream(&meta(&path, 80, b"x"), &all, C)
        .await
        .expect("store call"));
    assert_eq!(stored(s, &path).await.start, 0, "a new stream retains all");
    let seg = |start: u64, end: u64| SegmentRef {
        start,
        end,
        object_key: format!("seg/{path}/{start}"),
    };
    for g in [seg(0, 20), seg(20, 40)] {
        assert!(s.seal_segment(&path, &g, C).await.expect("store call"));
    }
    // Inside the second segment: only the first goes, the straddling one stays.
    let t = trim(s, &path, 25, 1).await;
    assert_eq!((t.start, t.chunks, t.more), (25, 0, false));
    assert_eq!(t.segments, vec![seg(0, 20)]);
    assert_eq!(
        s.segments(&path).await.expect("store call"),
        vec![seg(20, 40)]
    );
    // Past the cold tier, one chunk per batch: [40,50) goes, [50,60) is left for later.
    let t = trim(s, &path, 65, 1).await;
    assert_eq!((t.start, t.chunks, t.more), (65, 1, true));
    assert_eq!(t.segments, vec![seg(20, 40)]);
    assert_eq!(stored(s, &path).await.start, 65);
    // A lower `before` never lowers the start; it still reclaims what is below.
    let t = trim(s, &path, 0, 10).await;
    assert_eq!((t.start, t.chunks, t.more), (65, 1, false));
    assert!(t.segments.is_empty());
    assert!(s.segments(&path).await.expect("store call").is_empty());
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        all[6..],
        "the chunk straddling the start is kept whole, offsets unchanged"
    );
    // Never past the tail: everything goes, and appends carry on at the same offsets.
    let t = trim(s, &path, 1_000, 10).await;
    assert_eq!((t.start, t.chunks, t.more), (80, 2, false));
    assert!(s
        .read_chunks(&path, 0, usize::MAX)
        .await
        .expect("store call")
        .is_empty());
    let next = chunk(80, 5);
    let old = stored(s, &path).await;
    let new = StreamMeta {
        tail: 85,
        ..old.clone()
    };
    assert_eq!(
        s.commit(&path, 80, std::slice::from_ref(&next), &new, C)
            .await
            .expect("store call"),
        Commit::Written
    );
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        vec![next]
    );
    // A missing stream: nothing to trim.
    let ghost = unique("st-trim-ghost");
    assert_eq!(
        s.trim_stream(&ghost, 10, 10, None, C)
            .await
            .expect("store call"),
        None
    );
    s.delete_stream(&path, C).await.expect("store call");
}

async fn start_survives_commits(s: &dyn StreamStore) {
    let path = unique("st-trim-commit");
    let created = StreamMeta {
        start: 7,
        ..meta(&path, 10, b"a")
    };
    assert!(s
        .create_stream(&created, &[chunk(0, 10)], C)
        .await
        .expect("store call"));
    assert_eq!(stored(s, &path).await.start, 7, "created with its start");
    trim(s, &path, 9, 10).await;
    // A writer holding metadata from before the trim (start 7) commits: the start stays.
    let stale = StreamMeta {
        tail: 12,
        start: 0,
        ..meta(&path, 12, b"b")
    };
    assert_eq!(
        s.commit(&path, 10, &[chunk(10, 2)], &stale, C)
            .await
            .expect("store call"),
        Commit::Written
    );
    let now = stored(s, &path).await;
    assert_eq!(
        (now.tail, now.start, now.state.as_slice()),
        (12, 9, &b"b"[..])
    );
    // Deleted and recreated: the new incarnation starts over.
    s.delete_stream(&path, C).await.expect("store call");
    assert!(s
        .create_stream(&meta(&path, 0, b""), &[], C)
        .await
        .expect("store call"));
    assert_eq!(stored(s, &path).await.start, 0);
    s.delete_stream(&path, C).await.expect("store call");
}

/// A trim decided on a state the stream no longer has (another node made a fork meanwhile,
/// which the trim's floor missed) is refused and writes nothing; an append, which leaves the
/// state as it is, does not refuse it.
async fn trims_compare_the_state(s: &dyn StreamStore) {
    let path = unique("st-trim-cas");
    let all: Vec<_> = (0..4).map(|i| chunk(i * 10, 10)).collect();
    assert!(s
        .create_stream(&meta(&path, 40, b"forked"), &all, C)
        .await
        .expect("store call"));
    let refused = s.trim_stream(&path, 20, 10, Some(b"unforked"), C).await;
    assert_eq!(refused.expect("store call"), None, "stale state refused");
    assert_eq!(stored(s, &path).await.start, 0, "start untouched");
    let kept = s.read_chunks(&path, 0, 1 << 20).await.expect("store call");
    assert_eq!(kept, all, "no chunk deleted");
    // Another node's append meanwhile: same state, so the trim goes through.
    let appended = meta(&path, 50, b"forked");
    let written = s.commit(&path, 40, &[chunk(40, 10)], &appended, C).await;
    assert_eq!(written.expect("store call"), Commit::Written);
    let trimmed = s.trim_stream(&path, 20, 10, Some(b"forked"), C).await;
    let trimmed = trimmed.expect("store call").expect("same state trims");
    assert_eq!((trimmed.start, trimmed.chunks), (20, 2));
    let ghost = unique("st-trim-cas-ghost");
    let missing = s.trim_stream(&ghost, 10, 10, Some(b"forked"), C).await;
    assert_eq!(missing.expect("store call"), None);
    s.delete_stream(&path, C).await.expect("store call");
}

/// A fork decided on an older retained start of its source (another node trimmed meanwhile,
/// which leaves the state as it is) is refused and writes nothing: its floor would be below
/// data already deleted. At or above the stored start it is made.
async fn forks_compare_the_start(s: &dyn StreamStore) {
    let (src, fork) = (unique("st-trim-src"), unique("st-trim-fork"));
    let all: Vec<_> = (0..4).map(|i| chunk(i * 10, 10)).collect();
    assert!(s
        .create_stream(&meta(&src, 40, b"src"), &all, C)
        .await
        .expect("store call"));
    trim(s, &src, 20, 10).await;
    let link = |max_start: u64| ForkSource {
        path: src.clone(),
        state: b"src+1".to_vec(),
        expires_at: None,
        expected_state: Some(b"src".to_vec()),
        max_start: Some(max_start),
    };
    let fork_meta = StreamMeta {
        start: 30,
        ..meta(&fork, 30, b"fork")
    };
    let made = s.create_fork(&fork_meta, &[], &link(10), C).await;
    assert!(!made.expect("store call"), "decided on start 10, stored 20");
    assert_eq!(s.stream_meta(&fork).await.expect("store call"), None);
    let source = stored(s, &src).await;
    assert_eq!((source.start, source.state.as_slice()), (20, &b"src"[..]));
    let made = s.create_fork(&fork_meta, &[], &link(20), C).await;
    assert!(made.expect("store call"), "decided on the stored start");
    assert_eq!(stored(s, &src).await.state, b"src+1");
    let release = ForkSource {
        state: b"src".to_vec(),
        expected_state: None,
        max_start: None,
        ..link(0)
    };
    assert!(s.delete_fork(&fork, &release, C).await.expect("store call"));
    s.delete_stream(&src, C).await.expect("store call");
}
