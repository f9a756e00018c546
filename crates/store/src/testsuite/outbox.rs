//! The outbox: session operations queue their event exactly when they change a record, and
//! relays read and remove queued events by key.

use std::sync::Arc;

use super::{session, unique, C};
use crate::sessions::{Cas, EventFor, Rotation};
use crate::{now_ms, Stores};

/// This run's queued events (others may share the engine), oldest first.
pub(super) async fn ours(s: &Stores, tag: &str) -> Vec<(String, String)> {
    s.outbox
        .outbox_read(100_000)
        .await
        .expect("outbox read")
        .into_iter()
        .map(|item| (item.key, String::from_utf8_lossy(&item.data).into_owned()))
        .filter(|(_, data)| data.starts_with(tag))
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
        .replace_session_with(&next, 7, now, ev(&tag, "stale"), C)
        .await;
    assert_eq!(cas.expect("replace"), Cas::VersionMismatch);
    let cas = sessions
        .replace_session_with(&next, 1, now, ev(&tag, "replace"), C)
        .await;
    assert_eq!(cas.expect("replace"), Cas::Written);
    let mut moved = next.clone();
    moved.id = sessions.rotation_id(&rec.id, unique("ob-rot"));
    moved.version = 3;
    let rot = sessions
        .rotate_session_with(&rec.id, &moved, 2, now, ev(&tag, "rotate"), C)
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
}
