//! Rotation: a session moves to a new id in one step; the old id is dead at once.

use super::{session, unique, C, HOUR};
use crate::{now_ms, RecordWrite, Rotation, SessionOrigin, Stores};

/// Rotate keeps the user, origin and fields given, kills the old id, moves the user index,
/// and refuses a stale version, a dead old id and a taken new id without writing anything.
pub(super) async fn sessions_rotation(s: &Stores) {
    let user = unique("rot-user");
    let mut old = session(&unique("rot-old"), Some(&user));
    old.origin = SessionOrigin::OpenRoute;
    assert!(s
        .sessions
        .insert_session(&old, C)
        .await
        .expect("store call"));
    let now = now_ms();
    let new_id = s.sessions.rotation_id(&old.id, unique("rot-new"));
    assert_ne!(new_id, old.id);
    let mut next = old.clone();
    next.id = new_id.clone();
    next.version = 2;
    next.data = r#"{"role":"admin"}"#.into();
    // Neither a replace of the old id's user nor of its origin is possible through rotation.
    next.user_id = Some("someone-else".into());
    next.origin = SessionOrigin::Service;

    let stale = s
        .sessions
        .rotate_session(&old.id, RecordWrite::new(&next, 7, now))
        .await
        .expect("store call");
    assert_eq!(stale, Rotation::VersionMismatch, "stale version");
    assert!(
        s.sessions
            .get_session(&new_id, now)
            .await
            .expect("store call")
            .is_none(),
        "a refused rotation writes nothing"
    );

    // A taken id the engine could have chosen (on a Redis Cluster, one in the old id's slot).
    let other_id = s.sessions.rotation_id(&old.id, unique("rot-other"));
    let other = session(&other_id, Some(&user));
    assert!(s
        .sessions
        .insert_session(&other, C)
        .await
        .expect("store call"));
    let mut onto = next.clone();
    onto.id = other.id.clone();
    assert_eq!(
        s.sessions
            .rotate_session(&old.id, RecordWrite::new(&onto, 1, now))
            .await
            .expect("store call"),
        Rotation::IdTaken,
        "a live record under the new id is never overwritten"
    );
    let kept = s
        .sessions
        .get_session(&other.id, now)
        .await
        .expect("store call");
    assert_eq!(kept.as_ref(), Some(&other), "the live record is intact");

    assert_eq!(
        s.sessions
            .rotate_session(&old.id, RecordWrite::new(&next, 1, now))
            .await
            .expect("store call"),
        Rotation::Rotated
    );
    assert!(
        s.sessions
            .get_session(&old.id, now)
            .await
            .expect("store call")
            .is_none(),
        "the old id is dead at once"
    );
    let got = s
        .sessions
        .get_session(&new_id, now)
        .await
        .expect("store call")
        .expect("the new id is live");
    let mut expected = next.clone();
    expected.user_id = old.user_id.clone();
    expected.origin = SessionOrigin::OpenRoute;
    assert_eq!(
        got, expected,
        "fields as given; user and origin of the old record"
    );
    let listed: Vec<String> = s
        .sessions
        .list_user_sessions(&user, now, 10)
        .await
        .expect("store call")
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut want = vec![new_id.clone(), other.id.clone()];
    want.sort_by_key(|id| {
        (
            if *id == new_id {
                old.created_at
            } else {
                other.created_at
            },
            id.clone(),
        )
    });
    assert_eq!(listed, want, "the user index follows the rotation");
    assert!(
        !s.sessions
            .delete_session(&old.id, now, C)
            .await
            .expect("store call"),
        "nothing is left under the old id"
    );

    // The old id cannot be rotated again, and an expired record is not rotated.
    let mut again = next.clone();
    again.id = s.sessions.rotation_id(&old.id, unique("rot-again"));
    assert_eq!(
        s.sessions
            .rotate_session(&old.id, RecordWrite::new(&again, 2, now))
            .await
            .expect("store call"),
        Rotation::Missing
    );
    assert_eq!(
        s.sessions
            .rotate_session(&new_id, RecordWrite::new(&again, 2, now + 2 * HOUR))
            .await
            .expect("store call"),
        Rotation::Missing,
        "expired at `now`"
    );
    s.sessions
        .delete_user_sessions(&user, None, now, C)
        .await
        .expect("store call");
}
