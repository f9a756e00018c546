//! The suite's checks of two-phase stream commits (`commit_enqueue` + ticket): the order is
//! fixed at enqueue, tickets resolve whatever order they are awaited in, a dropped ticket does
//! not cancel its commit, and the tail check makes a failure cascade to the commits queued
//! after it (the guarantee pipelined appends rely on).

use super::stream_fixtures::{chunk, meta};
use super::{unique, C};
use crate::streams::{Commit, CommitTicket, StreamChunk, StreamStore};

/// Enqueues `len` bytes after `expected` (state `tag`); returns the ticket and the new tail.
async fn enqueue(
    s: &dyn StreamStore,
    path: &str,
    expected: u64,
    len: usize,
    tag: &[u8],
) -> (CommitTicket, u64) {
    let c = chunk(expected, len);
    let tail = c.end();
    let ticket = s
        .commit_enqueue(
            path,
            expected,
            vec![c],
            meta(path, tail, tag),
            Default::default(),
            C,
        )
        .await
        .expect("enqueue");
    (ticket, tail)
}

/// Runs the pipelining checks against one engine.
pub async fn run_pipeline(s: &dyn StreamStore) {
    pipelined_in_order(s).await;
    pipelined_failure_cascades(s).await;
}

/// Ten commits enqueued back to back, each expecting the previous one's tail, awaited in
/// reverse: all written, in order; a dropped ticket's commit is still applied.
async fn pipelined_in_order(s: &dyn StreamStore) {
    let path = unique("st-pipe");
    assert!(s
        .create_stream(&meta(&path, 0, b"s0"), &[], C)
        .await
        .expect("create"));
    let mut tickets = Vec::new();
    let mut expected: Vec<StreamChunk> = Vec::new();
    let mut tail = 0;
    for i in 0..10usize {
        let len = 3 + i;
        expected.push(chunk(tail, len));
        let (ticket, next) = enqueue(s, &path, tail, len, format!("s{i}").as_bytes()).await;
        tickets.push(ticket);
        tail = next;
    }
    while let Some(ticket) = tickets.pop() {
        assert_eq!(ticket.await.expect("ticket"), Commit::Written);
    }
    let stored = s.stream_meta(&path).await.expect("meta").expect("exists");
    assert_eq!((stored.tail, stored.state), (tail, b"s9".to_vec()));
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX).await.expect("read"),
        expected
    );

    let (dropped, after_dropped) = enqueue(s, &path, tail, 4, b"dropped").await;
    drop(dropped);
    let (next, last) = enqueue(s, &path, after_dropped, 2, b"last").await;
    assert_eq!(next.await.expect("ticket"), Commit::Written);
    let stored = s.stream_meta(&path).await.expect("meta").expect("exists");
    assert_eq!((stored.tail, stored.state), (last, b"last".to_vec()));
}

/// A commit that fails its tail check makes every commit chained after it fail too, and
/// writes nothing; a commit that expects the real tail, queued after them, succeeds.
async fn pipelined_failure_cascades(s: &dyn StreamStore) {
    let path = unique("st-pipe-fail");
    assert!(s
        .create_stream(&meta(&path, 0, b"s0"), &[], C)
        .await
        .expect("create"));
    let (first, tail) = enqueue(s, &path, 0, 5, b"first").await;
    // Believes the tail is 7 (say, a commit before it failed): loses, and so do its successors.
    let (lost, lost_tail) = enqueue(s, &path, 7, 3, b"lost").await;
    let (chained, chained_tail) = enqueue(s, &path, lost_tail, 4, b"chained").await;
    let (chained2, _) = enqueue(s, &path, chained_tail, 4, b"chained2").await;
    let (retry, retry_tail) = enqueue(s, &path, tail, 6, b"retry").await;
    assert_eq!(first.await.expect("ticket"), Commit::Written);
    assert_eq!(lost.await.expect("ticket"), Commit::Conflict);
    assert_eq!(chained.await.expect("ticket"), Commit::Conflict);
    assert_eq!(chained2.await.expect("ticket"), Commit::Conflict);
    assert_eq!(retry.await.expect("ticket"), Commit::Written);
    let stored = s.stream_meta(&path).await.expect("meta").expect("exists");
    assert_eq!((stored.tail, stored.state), (retry_tail, b"retry".to_vec()));
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX).await.expect("read"),
        vec![chunk(0, 5), chunk(5, 6)]
    );
}
