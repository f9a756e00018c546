//! The suite's check of `StreamStore::commit_checked`: the compare-and-set on the stored state
//! that shared engines need because the tail alone does not version a stream.

use super::streams::{chunk, meta};
use super::{unique, C};
use crate::streams::{Commit, StreamStore};

/// A change that keeps the tail (a close) still makes a writer that decided on the older
/// state lose.
pub async fn commit_checked_compares_the_state(s: &dyn StreamStore) {
    let path = unique("st-checked");
    s.create_stream(&meta(&path, 0, b"open"), &[], C)
        .await
        .expect("store call");
    let closed = meta(&path, 0, b"closed");
    assert_eq!(
        s.commit_checked(&path, 0, b"open", &[], &closed, C)
            .await
            .expect("store call"),
        Commit::Written
    );
    // Same tail, older state: refused, nothing written.
    let late = meta(&path, 3, b"open+data");
    assert_eq!(
        s.commit_checked(&path, 0, b"open", &[chunk(0, 3)], &late, C)
            .await
            .expect("store call"),
        Commit::Conflict
    );
    assert_eq!(
        s.stream_meta(&path).await.expect("store call"),
        Some(closed.clone())
    );
    assert!(s
        .read_chunks(&path, 0, usize::MAX)
        .await
        .expect("store call")
        .is_empty());
    // The right state but a stale tail loses too; both right wins.
    let data = meta(&path, 4, b"closed+data");
    assert_eq!(
        s.commit_checked(&path, 1, b"closed", &[chunk(1, 3)], &data, C)
            .await
            .expect("store call"),
        Commit::Conflict
    );
    assert_eq!(
        s.commit_checked(&path, 0, b"closed", &[chunk(0, 4)], &data, C)
            .await
            .expect("store call"),
        Commit::Written
    );
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        vec![chunk(0, 4)]
    );
    let ghost = unique("st-checked-ghost");
    assert_eq!(
        s.commit_checked(&ghost, 0, b"", &[], &meta(&ghost, 0, b"x"), C)
            .await
            .expect("store call"),
        Commit::Conflict,
        "a missing stream is a conflict"
    );
    s.delete_stream(&path, C).await.expect("store call");
}
