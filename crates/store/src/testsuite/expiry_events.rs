//! Expiry events: every engine reports each expired session to the sweep exactly once, with
//! the record as it ended, even when several sweeps run at once (several nodes), and never a
//! session that was used, revoked or rotated away before its deadline.

use std::sync::Arc;

use super::outbox::ours;
use super::{session, unique, C};
use crate::sessions::{EventFor, RecordWrite, Rotation};
use crate::{now_ms, Millis, Stores};

const MINUTE: Millis = 60_000;

pub(super) async fn sessions_expiry_events(s: &Stores) {
    let tag = unique("expiry-events");
    let user = unique("expiry-user");
    let now = now_ms();
    let soon = |name: &str| {
        let mut r = session(&unique(name), Some(&user));
        r.idle_expires_at = now + MINUTE;
        r
    };
    let (idle, used, revoked, rotated, anonymous) = (
        soon("exp-idle"),
        soon("exp-used"),
        soon("exp-revoked"),
        soon("exp-rotated"),
        {
            let mut r = session(&unique("exp-anon"), None);
            r.absolute_expires_at = now + MINUTE;
            r
        },
    );
    for r in [&idle, &used, &revoked, &rotated, &anonymous] {
        assert!(s.sessions.insert_session(r, C).await.expect("insert"));
    }
    let then = now + 2 * MINUTE;
    // Used before its deadline: lives past `then`.
    assert!(s
        .sessions
        .touch_session(&used.id, then + MINUTE, now, now, C)
        .await
        .expect("touch"));
    assert!(s
        .sessions
        .delete_session(&revoked.id, now, C)
        .await
        .expect("delete"));
    let mut moved = rotated.clone();
    moved.id = s.sessions.rotation_id(&rotated.id, unique("exp-moved"));
    moved.version = 2;
    assert_eq!(
        s.sessions
            .rotate_session(&rotated.id, RecordWrite::new(&moved, 1, now))
            .await
            .expect("rotate"),
        Rotation::Rotated
    );

    // Two sweeps at once, as two nodes would run them, until both find nothing.
    let events: EventFor = {
        let tag = tag.clone();
        Arc::new(move |r| {
            let reason = match r.idle_expires_at < r.absolute_expires_at {
                true => "idle",
                false => "absolute",
            };
            Some(format!("{tag}:{}:{reason}:{}", r.id, r.version).into_bytes())
        })
    };
    for _ in 0..1000 {
        let (a, b) = tokio::join!(
            s.sessions
                .sweep_sessions_with(then, 3, Some(events.clone())),
            s.sessions
                .sweep_sessions_with(then, 3, Some(events.clone())),
        );
        if a.expect("sweep") + b.expect("sweep") == 0 {
            break;
        }
    }

    let mut got: Vec<String> = ours(s, &tag).await.into_iter().map(|(_, d)| d).collect();
    got.sort();
    let mut want = vec![
        format!("{tag}:{}:idle:1", idle.id),
        format!("{tag}:{}:idle:2", moved.id),
        format!("{tag}:{}:absolute:1", anonymous.id),
    ];
    want.sort();
    assert_eq!(
        got, want,
        "each expired session exactly once; none for the used, revoked or rotated-away ones"
    );
    for gone in [&idle.id, &moved.id, &anonymous.id] {
        assert!(
            s.sessions
                .get_session(gone, now)
                .await
                .expect("get")
                .is_none(),
            "a swept session is gone, even for a reader whose clock is behind"
        );
    }
    assert!(
        s.sessions
            .get_session(&used.id, then)
            .await
            .expect("get")
            .is_some(),
        "the session used before its deadline lives on"
    );
    assert!(
        s.sessions
            .list_user_sessions(&user, now, 10)
            .await
            .expect("list")
            .iter()
            .all(|r| r.id == used.id),
        "swept sessions leave the user's index"
    );
    let keys: Vec<String> = ours(s, &tag).await.into_iter().map(|(k, _)| k).collect();
    s.outbox.outbox_remove(&keys).await.expect("remove");
}
