//! The suite's check of `StreamStore::commit_checked`, of `ForkSource::expected_state` and of
//! the sealed-end check of `seal_segment`: the compare-and-sets that shared engines need
//! because the tail alone does not version a stream and two nodes may seal at once.

use super::stream_fixtures::{chunk, meta};
use super::{unique, C};
use crate::streams::{
    Appended, CheckedCommit, CheckedWrite, Commit, ForkSource, ProducerBefore, ProducerRecord,
    ProducerUpdate, SegmentRef, StreamChunk, StreamMeta, StreamStore,
};
use crate::Millis;

/// Runs the checks against one engine.
pub async fn run_stream_cas(s: &dyn StreamStore) {
    commit_checked_compares_the_state(s).await;
    commit_checked_writes_producers(s).await;
    a_lost_commit_says_what_won(s).await;
    a_stale_append_moves_or_loses(s).await;
    an_append_requires_its_producer_rows(s).await;
    forks_compare_the_source_state(s).await;
    seals_compare_the_sealed_end(s).await;
}

/// A change that keeps the tail (a close) still makes a writer that decided on the older
/// state lose.
async fn commit_checked_compares_the_state(s: &dyn StreamStore) {
    let path = unique("st-checked");
    s.create_stream(&meta(&path, 0, b"open"), &[], C)
        .await
        .expect("store call");
    let closed = meta(&path, 0, b"closed");
    assert_eq!(
        s.commit_checked(cw(&path, 0, b"open", &[], &closed, none()))
            .await
            .expect("store call"),
        Commit::Written
    );
    // Same tail, older state: refused, nothing written.
    let late = meta(&path, 3, b"open+data");
    assert_eq!(
        s.commit_checked(cw(&path, 0, b"open", &[chunk(0, 3)], &late, none()))
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
        s.commit_checked(cw(&path, 1, b"closed", &[chunk(1, 3)], &data, none()))
            .await
            .expect("store call"),
        Commit::Conflict
    );
    assert_eq!(
        s.commit_checked(cw(&path, 0, b"closed", &[chunk(0, 4)], &data, none()))
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
        s.commit_checked(cw(&ghost, 0, b"", &[], &meta(&ghost, 0, b"x"), none()))
            .await
            .expect("store call"),
        Commit::Conflict,
        "a missing stream is a conflict"
    );
    s.delete_stream(&path, C).await.expect("store call");
}

/// `commit_checked_or_current`: a lost commit writes nothing and returns the stored
/// metadata as `stream_meta` reads it (what a writer decides its retry on); a winning one
/// writes like `commit_checked`; a missing stream has nothing to return.
async fn a_lost_commit_says_what_won(s: &dyn StreamStore) {
    let path = unique("st-current");
    s.create_stream(&meta(&path, 0, b"v0"), &[], C)
        .await
        .expect("store call");
    let winner = meta(&path, 3, b"v1");
    let won = s
        .commit_checked_or_current(cw(&path, 0, b"v0", &[chunk(0, 3)], &winner, none()))
        .await
        .expect("store call");
    assert_eq!(won, CheckedCommit::Written);
    let loser = meta(&path, 2, b"v1'");
    let lost = s
        .commit_checked_or_current(cw(&path, 0, b"v0", &[chunk(0, 2)], &loser, none()))
        .await
        .expect("store call");
    let stored = s.stream_meta(&path).await.expect("store call");
    assert!(stored.is_some());
    assert_eq!(
        lost,
        CheckedCommit::Conflict(stored),
        "the winner's metadata"
    );
    // Deciding again on what came back wins without another read.
    let retry = meta(&path, 5, b"v2");
    let again = s
        .commit_checked_or_current(cw(&path, 3, b"v1", &[chunk(3, 2)], &retry, none()))
        .await
        .expect("store call");
    assert_eq!(again, CheckedCommit::Written);
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        vec![chunk(0, 3), chunk(3, 2)],
        "the lost commit wrote nothing"
    );
    let ghost = unique("st-current-ghost");
    let missing = s
        .commit_checked_or_current(cw(&ghost, 0, b"", &[], &meta(&ghost, 0, b"x"), none()))
        .await
        .expect("store call");
    assert_eq!(missing, CheckedCommit::Conflict(None));
    s.delete_stream(&path, C).await.expect("store call");
}

fn none() -> ProducerUpdate {
    ProducerUpdate::default()
}

/// An update writing the row of producer `p` with `state`, used at `used_at`, keeping at
/// most `max_producers` rows.
fn row_p(state: &[u8], used_at: Millis, max_producers: usize) -> ProducerUpdate {
    ProducerUpdate {
        upsert: vec![ProducerRecord {
            id: "p".into(),
            state: state.to_vec(),
            used_at,
        }],
        max_producers,
    }
}

/// The checked write of `chunks` and `meta` decided on `tail` and `state`.
fn cw<'a>(
    path: &'a str,
    tail: u64,
    state: &'a [u8],
    chunks: &'a [StreamChunk],
    meta: &'a StreamMeta,
    producers: ProducerUpdate,
) -> CheckedWrite<'a> {
    CheckedWrite {
        path,
        expected_tail: tail,
        expected_state: state,
        chunks,
        meta,
        producers,
        durability: C,
    }
}

/// The producer rows of a checked commit are written with it, and not at all when it loses.
async fn commit_checked_writes_producers(s: &dyn StreamStore) {
    let path = unique("st-checked-prod");
    s.create_stream(&meta(&path, 0, b"open"), &[], C)
        .await
        .expect("store call");
    let data = [chunk(0, 2)];
    let m = meta(&path, 2, b"a");
    let commit = |decided_on: &'static [u8], state: &'static [u8]| {
        s.commit_checked(cw(&path, 0, decided_on, &data, &m, row_p(state, 7, 1)))
    };
    let lost = commit(b"other", b"lost").await.expect("store call");
    assert_eq!(lost, Commit::Conflict);
    assert_eq!(
        s.stream_producer(&path, "p").await.expect("store call"),
        None
    );
    let won = commit(b"open", b"1").await.expect("store call");
    assert_eq!(won, Commit::Written);
    let stored = s.stream_producer(&path, "p").await.expect("store call");
    assert_eq!(
        stored.map(|r| (r.state, r.used_at)),
        Some((b"1".to_vec(), 7))
    );
    s.delete_stream(&path, C).await.expect("store call");
}

/// A fork created or deleted against a source whose state changed is refused, and nothing is
/// written.
async fn forks_compare_the_source_state(s: &dyn StreamStore) {
    let (src, fork) = (unique("st-cas-src"), unique("st-cas-fork"));
    s.create_stream(&meta(&src, 0, b"src"), &[], C)
        .await
        .expect("store call");
    let link = |expected: &[u8], new: &[u8]| ForkSource {
        path: src.clone(),
        state: new.to_vec(),
        expires_at: None,
        expected_state: Some(expected.to_vec()),
        max_start: None,
    };
    let fork_meta = meta(&fork, 0, b"fork");
    assert!(!s
        .create_fork(&fork_meta, &[], &link(b"closed", b"src+1"), C)
        .await
        .expect("store call"));
    assert!(s.stream_meta(&fork).await.expect("store call").is_none());
    assert!(s
        .create_fork(&fork_meta, &[], &link(b"src", b"src+1"), C)
        .await
        .expect("store call"));
    assert!(!s
        .delete_fork(&fork, &link(b"src", b"src+0"), C)
        .await
        .expect("store call"));
    assert!(s.stream_meta(&fork).await.expect("store call").is_some());
    assert!(s
        .delete_fork(&fork, &link(b"src+1", b"src+0"), C)
        .await
        .expect("store call"));
    assert!(s.stream_meta(&fork).await.expect("store call").is_none());
    assert_eq!(
        s.stream_meta(&src)
            .await
            .expect("store call")
            .map(|m| m.state),
        Some(b"src+0".to_vec())
    );
    s.delete_stream(&src, C).await.expect("store call");
}

/// A seal decided on an older segment index (it does not start where the sealed range now
/// ends) is refused and changes nothing.
async fn seals_compare_the_sealed_end(s: &dyn StreamStore) {
    let path = unique("st-seal-cas");
    let chunks = [chunk(0, 10), chunk(10, 10), chunk(20, 10)];
    s.create_stream(&meta(&path, 30, b"m"), &chunks, C)
        .await
        .expect("store call");
    let seg = |start: u64, end: u64, key: &str| SegmentRef {
        start,
        end,
        object_key: format!("{key}/{start}-{end}"),
    };
    let path = path.as_str();
    let seal = |g: SegmentRef| async move { s.seal_segment(path, &g, C).await.expect("seal") };
    assert!(
        !seal(seg(10, 20, "gap")).await,
        "must start at the first hot chunk"
    );
    assert!(seal(seg(0, 10, "a")).await);
    // Another sealer that read the index before: its overlapping segment is refused.
    assert!(!seal(seg(0, 20, "b")).await);
    assert!(!seal(seg(20, 30, "gap")).await);
    assert!(seal(seg(10, 20, "a")).await);
    assert_eq!(
        s.segments(path).await.expect("store call"),
        vec![seg(0, 10, "a"), seg(10, 20, "a")]
    );
    assert_eq!(
        s.read_chunks(path, 0, usize::MAX)
            .await
            .expect("store call"),
        vec![chunk(20, 10)]
    );
    s.delete_stream(path, C).await.expect("store call");
}

/// `append_checked` with a stale tail: an append that leaves the state alone is moved to the
/// stored tail (data intact, answer says where) or, on an engine that does not move, loses
/// with the stored metadata; one that changes the state always loses.
async fn a_stale_append_moves_or_loses(s: &dyn StreamStore) {
    let path = unique("st-move");
    s.create_stream(&meta(&path, 0, b"s"), &[], C)
        .await
        .expect("store call");
    let first = append_from_zero(s, &path, &chunk(0, 3), b"s").await;
    assert_eq!(first, Appended::Written { start: 0 });
    // Decided on tail 0, which another writer moved to 3.
    let stale = chunk(0, 2);
    let second = append_from_zero(s, &path, &stale, b"s").await;
    let mut expected = vec![chunk(0, 3)];
    match second {
        Appended::Written { start } => {
            assert_eq!(start, 3, "moved to the stored tail");
            expected.push(StreamChunk {
                offset: 3,
                data: stale.data,
            });
        }
        Appended::Conflict(current) => {
            assert_eq!(current.map(|m| m.tail), Some(3), "the stored metadata");
        }
    }
    let tail = expected.last().map_or(0, StreamChunk::end);
    let stored = s.stream_meta(&path).await.expect("store call");
    assert_eq!(
        stored.as_ref().map(|m| (m.tail, m.state.as_slice())),
        Some((tail, &b"s"[..]))
    );
    // A state change decided on a stale tail never moves.
    let changing = append_from_zero(s, &path, &chunk(0, 1), b"s2").await;
    assert_eq!(changing, Appended::Conflict(stored));
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        expected
    );
    let ghost = unique("st-move-ghost");
    let missing = append_from_zero(s, &ghost, &chunk(0, 1), b"s").await;
    assert_eq!(missing, Appended::Conflict(None));
    s.delete_stream(&path, C).await.expect("store call");
}

/// `append_checked` of `data` decided on tail 0 and state `s`, leaving the state `state`, with
/// no producer rows.
async fn append_from_zero(
    s: &dyn StreamStore,
    path: &str,
    data: &StreamChunk,
    state: &[u8],
) -> Appended {
    let m = meta(path, data.end(), state);
    let chunks = std::slice::from_ref(data);
    s.append_checked(cw(path, 0, b"s", chunks, &m, none()), &[])
        .await
        .expect("store call")
}

/// `append_checked` writes only when each required producer row holds the required state
/// (`None`: no row), whatever the tail; a refused append writes no chunk and no row.
async fn an_append_requires_its_producer_rows(s: &dyn StreamStore) {
    let path = unique("st-move-prod");
    s.create_stream(&meta(&path, 0, b"s"), &[], C)
        .await
        .expect("store call");
    let row = |state: &[u8]| row_p(state, 1, 0);
    let before = |state: Option<&[u8]>| {
        vec![ProducerBefore {
            id: "p".into(),
            state: state.map(<[u8]>::to_vec),
        }]
    };
    let append = |at: u64, state: &'static [u8], need: Option<&'static [u8]>| {
        let path = path.clone();
        async move {
            s.append_checked(
                cw(
                    &path,
                    at,
                    b"s",
                    &[chunk(at, 1)],
                    &meta(&path, at + 1, b"s"),
                    row(state),
                ),
                &before(need),
            )
            .await
            .expect("store call")
        }
    };
    assert_eq!(
        append(0, b"e0s0", None).await,
        Appended::Written { start: 0 }
    );
    // The row exists now, and does not hold what these require: refused.
    for need in [None, Some(&b"e0s5"[..])] {
        assert!(matches!(
            append(1, b"e0s1", need).await,
            Appended::Conflict(Some(_))
        ));
    }
    assert_eq!(
        append(1, b"e0s1", Some(b"e0s0")).await,
        Appended::Written { start: 1 }
    );
    let stored = s.stream_producer(&path, "p").await.expect("store call");
    assert_eq!(stored.map(|r| r.state), Some(b"e0s1".to_vec()));
    assert_eq!(
        s.read_chunks(&path, 0, usize::MAX)
            .await
            .expect("store call"),
        vec![chunk(0, 1), chunk(1, 1)],
        "refused appends wrote nothing"
    );
    s.delete_stream(&path, C).await.expect("store call");
}
