//! The shared suite's checks of [`StreamStore::drop_chunks`]: chunks at exactly the given
//! offsets go, all or none; survivors keep their offsets and bytes; reads skip the gaps; the
//! tail, start and metadata stay.

use super::stream_fixtures::{chunk, meta};
use super::{unique, C};
use crate::streams::{Commit, SegmentRef, StreamChunk, StreamStore};

/// Runs every compaction check against one engine.
pub async fn run_compaction(s: &dyn StreamStore) {
    drop_is_all_or_nothing(s).await;
}

async fn read_all(s: &dyn StreamStore, path: &str, from: u64) -> Vec<StreamChunk> {
    s.read_chunks(path, from, usize::MAX)
        .await
        .expect("store call")
}

async fn drop_is_all_or_nothing(s: &dyn StreamStore) {
    let path = unique("st-compact");
    let all: Vec<_> = (0..6).map(|i| chunk(i * 10, 10)).collect();
    let m = meta(&path, 60, b"compacting");
    assert!(s.create_stream(&m, &all, C).await.expect("store call"));

    assert!(s
        .drop_chunks(&path, &[10, 30], C)
        .await
        .expect("store call"));
    let left = read_all(s, &path, 0).await;
    let want: Vec<_> = [0, 20, 40, 50].iter().map(|o| chunk(*o, 10)).collect();
    assert_eq!(left, want, "survivors keep offsets and bytes");
    // A read from inside a gap starts at the next survivor.
    assert_eq!(read_all(s, &path, 12).await, want[1..].to_vec());
    assert_eq!(read_all(s, &path, 25).await, want[1..].to_vec());
    let stored = s.stream_meta(&path).await.expect("store call");
    let stored = stored.expect("stream exists");
    assert_eq!((stored.tail, stored.start), (60, 0));
    assert_eq!(stored.state, b"compacting".to_vec());

    // One offset that is not a chunk (already dropped, or inside one) refuses the batch.
    assert!(!s.drop_chunks(&path, &[0, 10], C).await.expect("store call"));
    assert!(!s
        .drop_chunks(&path, &[20, 45], C)
        .await
        .expect("store call"));
    assert_eq!(read_all(s, &path, 0).await, want, "nothing dropped");

    // Appends after a gap land as usual; a sealed chunk is no longer droppable.
    let extra = chunk(60, 10);
    let next = meta(&path, 70, b"compacting");
    let done = s
        .commit(&path, 60, std::slice::from_ref(&extra), &next, C)
        .await
        .expect("store call");
    assert_eq!(done, Commit::Written);
    let seg = SegmentRef {
        start: 0,
        end: 10,
        object_key: format!("seg/{path}/0"),
    };
    assert!(s.seal_segment(&path, &seg, C).await.expect("store call"));
    assert!(!s.drop_chunks(&path, &[0], C).await.expect("store call"));
    assert!(s.drop_chunks(&path, &[60], C).await.expect("store call"));
    let left = read_all(s, &path, 0).await;
    assert_eq!(left, want[1..].to_vec());

    let ghost = unique("st-compact-missing");
    assert!(!s.drop_chunks(&ghost, &[0], C).await.expect("store call"));
    assert!(s.delete_stream(&path, C).await.expect("store call"));
}
