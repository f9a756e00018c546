//! The outbox: session operations queue their event exactly when they change a record, and
//! relays read and remove queued events by key.

use std::sync::Arc;

use super::{session, unique, C};
use crate::sessions::{Cas, EventFor, RecordWrite, Rotation};
use crate::{now_ms, Stores};

/// This run's queued events (others may share the engine), oldest first.
pub(super) async fn ours(s: &Stores, tag: &str) -> Vec<(String, String)> {
    places(s, tag)
        .await
        .into_iter()
        .map(|item| (item.key, String::from_utf8_lossy(&item.data).into_owned()))
        .collect()
}

/// This run's queued items.
async fn places(s: &Stores, tag: &str) -> Vec<crate::OutboxItem> {
    s.outbox
        .outbox_read(100_000)
        .await
        .expect("outbox read")
        .into_iter()
        .filter(|item| item.data.starts_with(tag.as_bytes()))
        .collect()
}

fn ev(tag: &str, what: &str) -> Option<Vec<u8>> {
    Some(format!("{tag}:{what}").into_bytes())
}

pub(super) async fn sessions_outbox(s: &Stores) {
    let tag = unique("outbox");
    let user = unique("outbox-user");
    let now = now_ms();
    let rec = session(&unique("ob"), Some(&user));
    let sessions = &s.sessions;
    assert!(sessions
        .insert_session_with(&rec, ev(&tag, "insert"), C)
        .await
        .expect("insert"));
    // Refused writes queue nothing.
    assert!(!sessions
        .insert_session_with(&rec, ev(&tag, "dup"), C)
        .await
        .expect("insert"));
    let mut next = rec.clone();
    next.version = 2;
    let cas = sessions
        .replace_session(RecordWrite::new(&next, 7, now).event(ev(&tag, "stale")))
        .await;
    assert_eq!(cas.expect("replace"), Cas::VersionMismatch);
    let cas = sessions
        .replace_session(RecordWrite::new(&next, 1, now).event(ev(&tag, "replace")))
        .await;
    assert_eq!(cas.expect("replace"), Cas::Written);
    let mut moved = next.clone();
    moved.id = sessions.rotation_id(&rec.id, unique("ob-rot"));
    moved.version = 3;
    let rot = sessions
        .rotate_session(
            &rec.id,
            RecordWrite::new(&moved, 2, now).event(ev(&tag, "rotate")),
        )
        .await;
    assert_eq!(rot.expect("rotate"), Rotation::Rotated);
    let gone = sessions
        .delete_session_with(&rec.id, now, ev(&tag, "nothing"), C)
        .await;
    assert!(!gone.expect("delete"), "the old id is gone");
    assert!(sessions
        .delete_session_with(&moved.id, now, ev(&tag, "delete"), C)
        .await
        .expect("delete"));
    // A bulk delete queues one event per live record it deleted, built from that record.
    let (a, b) = (
        session(&unique("ob-a"), Some(&user)),
        session(&unique("ob-b"), Some(&user)),
    );
    for r in [&a, &b] {
        assert!(sessions.insert_session(r, C).await.expect("insert"));
    }
    let per: EventFor = {
        let tag = tag.clone();
        Arc::new(move |r| Some(format!("{tag}:bulk:{}", r.id).into_bytes()))
    };
    let deleted = sessions
        .delete_user_sessions_with(&user, Some(&a.id), now, Some(per), C)
        .await
        .expect("bulk delete");
    assert_eq!(deleted, vec![b.id.clone()]);
    s.outbox
        .outbox_push(vec![ev(&tag, "pushed").unwrap_or_default()], C)
        .await
        .expect("push");

    let items = places(s, &tag).await;
    let queued = ours(s, &tag).await;
    let texts: Vec<&str> = queued.iter().map(|(_, d)| d.as_str()).collect();
    let want = [
        format!("{tag}:insert"),
        format!("{tag}:replace"),
        format!("{tag}:rotate"),
        format!("{tag}:delete"),
        format!("{tag}:bulk:{}", b.id),
        format!("{tag}:pushed"),
    ];
    // Exactly the changes' events; one session's in order (engines with one queue per
    // shard order only what shares a shard, and a session's events always do).
    let mut sorted = texts.clone();
    sorted.sort();
    let mut wanted = want.to_vec();
    wanted.sort();
    assert_eq!(sorted, wanted, "exactly the changes' events");
    let one_session: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|t| want[..4].iter().any(|w| w == t))
        .collect();
    assert_eq!(
        one_session,
        want[..4].to_vec(),
        "one session's events in order"
    );
    // One session's events have increasing positions in one queue.
    let session_items: Vec<&crate::OutboxItem> = items
        .iter()
        .filter(|i| want[..4].iter().any(|w| w.as_bytes() == i.data.as_slice()))
        .collect();
    assert!(
        session_items.windows(2).all(|w| w[0].queue == w[1].queue
            && w[0].position.is_some()
            && w[0].position < w[1].position),
        "one session's events: one queue, increasing positions"
    );
    // Removing by key removes exactly those.
    let first: Vec<String> = queued.iter().take(2).map(|(k, _)| k.clone()).collect();
    s.outbox.outbox_remove(&first).await.expect("remove");
    let mut left: Vec<String> = ours(s, &tag).await.into_iter().map(|(_, d)| d).collect();
    let mut expected: Vec<String> = queued.iter().skip(2).map(|(_, d)| d.clone()).collect();
    left.sort();
    expected.sort();
    assert_eq!(left, expected, "removed by key");
    let rest: Vec<String> = ours(s, &tag).await.into_iter().map(|(k, _)| k).collect();
    s.outbox.outbox_remove(&rest).await.expect("remove");
    assert!(ours(s, &tag).await.is_empty(), "all removed");
    s.outbox
        .outbox_remove(&rest)
        .await
        .expect("removing twice is harmless");
    // A position is never handed out again, not even once its queue is empty.
    // (The id of an earlier event's session: the same queue on engines with several.)
    let mut again = moved.clone();
    again.version = 1;
    assert!(sessions
        .insert_session_with(&again, ev(&tag, "again"), C)
        .await
        .expect("insert"));
    let later = places(s, &tag).await;
    assert_eq!(later.len(), 1, "the new event");
    let highest = items
        .iter()
        .filter(|i| i.queue == later[0].queue)
        .filter_map(|i| i.position)
        .max()
        .expect("an earlier event in the same queue");
    assert!(
        later[0].position.is_some_and(|p| p > highest),
        "position reused: {:?} after {highest}",
        later[0].position
    );
    let keys: Vec<String> = later.into_iter().map(|i| i.key).collect();
    s.outbox.outbox_remove(&keys).await.expect("remove");
}

/// The relay lease: one holder at a time on engines several processes share, renewed by its
/// holder, taken over once released or expired; engines one process owns always grant it.
pub(super) async fn outbox_relay_lease(s: &Stores) {
    let (a, b) = (unique("relay-a"), unique("relay-b"));
    let lease = |holder: String, ttl_ms: u64| {
        let outbox = s.outbox.clone();
        async move { outbox.outbox_lease(&holder, ttl_ms).await.expect("lease") }
    };
    assert!(lease(a.clone(), 60_000).await, "a free lease is granted");
    assert!(lease(a.clone(), 60_000).await, "its holder renews it");
    let shared = !s.admin.exclusive();
    // Another holder: refused while the lease runs on a shared engine, granted on the others.
    assert_eq!(lease(b.clone(), 60_000).await, !shared, "a second holder");
    // Releasing someone else's lease changes nothing.
    s.outbox.outbox_lease_release(&b).await.expect("release");
    assert_eq!(
        lease(b.clone(), 60_000).await,
        !shared,
        "released by a non-holder"
    );
    s.outbox.outbox_lease_release(&a).await.expect("release");
    assert!(
        lease(b.clone(), 60_000).await,
        "released: another holder takes it"
    );
    assert_eq!(
        lease(a.clone(), 60_000).await,
        !shared,
        "the old holder is refused"
    );
    // A lease that is not renewed expires and is taken over.
    assert!(lease(b.clone(), 100).await, "renewed with a short TTL");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !lease(a.clone(), 60_000).await {
        assert!(
            std::time::Instant::now() < deadline,
            "an expired lease was not taken over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        lease(b.clone(), 60_000).await,
        !shared,
        "expired: b lost it"
    );
    s.outbox.outbox_lease_release(&a).await.expect("release");
    s.outbox.outbox_lease_release(&b).await.expect("release");
}

/// A read says where it cut a queue short: a read of one event may leave more in every queue
/// it read (each item it returns is marked), and a read with room for every event marks none
/// of ours.
pub(super) async fn outbox_reads_mark_cut_queues(s: &Stores) {
    let tag = unique("outbox-cut");
    let pushed: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .map(|what| ev(&tag, what).unwrap_or_default())
        .collect();
    s.outbox.outbox_push(pushed, C).await.expect("push");
    let one = s.outbox.outbox_read(1).await.expect("read");
    assert!(!one.is_empty(), "three events are queued");
    assert!(
        one.iter().all(|item| item.more_in_queue),
        "a read of one event cut every queue it read: {one:?}"
    );
    let all = places(s, &tag).await;
    let texts: Vec<String> = all
        .iter()
        .map(|i| String::from_utf8_lossy(&i.data).into_owned())
        .collect();
    assert_eq!(
        texts,
        [format!("{tag}:a"), format!("{tag}:b"), format!("{tag}:c")],
        "pushed events are one queue, in order"
    );
    assert!(
        all.iter().all(|item| !item.more_in_queue),
        "a read with room for everything cuts nothing: {all:?}"
    );
    let keys: Vec<String> = all.into_iter().map(|i| i.key).collect();
    s.outbox.outbox_remove(&keys).await.expect("remove");
}
