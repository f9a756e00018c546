//! The one-step session operations (touch and return, checked delete, insert below the cap):
//! the same outcome on every engine, whether it runs them as one step or as the portable
//! read-then-write default.

use super::outbox::ours;
use super::{session, unique, C, HOUR};
use crate::sessions::{DataEvent, Deletion, EventPart};
use crate::{now_ms, SessionOrigin, Stores};

/// An event template whose holes show what the engine filled in.
fn template(tag: &str) -> DataEvent {
    DataEvent(vec![
        EventPart::Text(format!("{tag}:").into_bytes()),
        EventPart::UserId,
        EventPart::Text(b"|".to_vec()),
        EventPart::Origin,
        EventPart::Text(b"|".to_vec()),
        EventPart::Version,
        EventPart::Text(b"|".to_vec()),
        EventPart::ChangedKeys,
    ])
}

/// Touch slides the idle deadline by the stored window and returns the record; a missing or
/// expired session is `None` and stays untouched.
pub(super) async fn sessions_touch_now(s: &Stores) {
    let sessions = &s.sessions;
    let now = now_ms();
    let mut rec = session(&unique("tn"), Some("tn-user"));
    rec.idle_ttl_ms = 2 * HOUR;
    rec.idle_expires_at = now + 1000;
    rec.last_seen_at = now - 10;
    assert!(sessions.insert_session(&rec, C).await.expect("insert"));
    let at = now + 500;
    let touched = sessions.touch_session_now(&rec.id, at, C).await;
    let touched = touched.expect("touch").expect("live");
    assert_eq!(touched.idle_expires_at, at + 2 * HOUR);
    assert_eq!(touched.last_seen_at, at);
    assert_eq!(touched.version, 1, "a touch keeps the version");
    assert_eq!(touched.data, rec.data);
    let stored = sessions.get_session(&rec.id, at).await.expect("get");
    assert_eq!(stored.as_ref(), Some(&touched), "returned as stored");
    // Never backward: an earlier touch changes nothing.
    let early = sessions.touch_session_now(&rec.id, now, C).await;
    let early = early.expect("touch").expect("live");
    assert_eq!(
        (early.idle_expires_at, early.last_seen_at),
        (at + 2 * HOUR, at)
    );
    let gone = sessions.touch_session_now(&unique("tn-none"), now, C).await;
    assert!(gone.expect("touch").is_none());
    let mut short = session(&unique("tn-exp"), None);
    short.idle_expires_at = now + 50;
    assert!(sessions.insert_session(&short, C).await.expect("insert"));
    let late = sessions.touch_session_now(&short.id, now + 60, C).await;
    assert!(late.expect("touch").is_none(), "expired: not revived");
    // Gone now, so no later expiry sweep of this engine meets it.
    sessions
        .delete_session(&short.id, now + 60, C)
        .await
        .expect("delete");
}

/// A checked delete refuses a stale version, reports the record it deleted and queues the
/// event with the record's facts; a missing session is `Missing` with no event.
pub(super) async fn sessions_delete_checked(s: &Stores) {
    let sessions = &s.sessions;
    let tag = unique("dc");
    let now = now_ms();
    let user = unique("dc-user");
    let mut rec = session(&unique("dc"), Some(&user));
    rec.version = 4;
    rec.origin = SessionOrigin::OpenRoute;
    assert!(sessions.insert_session(&rec, C).await.expect("insert"));
    let event = template(&tag);
    let stale = sessions
        .delete_session_checked(&rec.id, Some(3), now, Some(&event), C)
        .await;
    assert_eq!(
        stale.expect("delete"),
        Deletion::VersionMismatch { current: 4 }
    );
    assert!(sessions
        .get_session(&rec.id, now)
        .await
        .expect("get")
        .is_some());
    let done = sessions
        .delete_session_checked(&rec.id, Some(4), now, Some(&event), C)
        .await;
    assert_eq!(done.expect("delete"), Deletion::Deleted(rec.clone()));
    assert!(sessions
        .get_session(&rec.id, now)
        .await
        .expect("get")
        .is_none());
    let again = sessions
        .delete_session_checked(&rec.id, None, now, Some(&event), C)
        .await;
    assert_eq!(again.expect("delete"), Deletion::Missing);
    let listed = sessions.list_user_sessions(&user, now, 100).await;
    assert!(listed.expect("list").iter().all(|r| r.id != rec.id));
    let queued: Vec<String> = ours(s, &tag).await.into_iter().map(|(_, e)| e).collect();
    assert_eq!(queued, vec![format!(r#"{tag}:"{user}"|"open_route"|4|[]"#)]);
    // Without a template nothing is queued; an unowned session has a null owner.
    let plain = session(&unique("dc-plain"), None);
    assert!(sessions.insert_session(&plain, C).await.expect("insert"));
    let done = sessions
        .delete_session_checked(&plain.id, None, now, None, C)
        .await;
    assert_eq!(done.expect("delete"), Deletion::Deleted(plain));
    assert_eq!(ours(s, &tag).await.len(), 1);
    // An expired session is missing (and its hash gone: a new insert under the id works).
    let mut short = session(&unique("dc-exp"), None);
    short.idle_expires_at = now + 50;
    assert!(sessions.insert_session(&short, C).await.expect("insert"));
    let late = sessions
        .delete_session_checked(&short.id, None, now + 60, Some(&event), C)
        .await;
    assert_eq!(late.expect("delete"), Deletion::Missing);
    assert_eq!(ours(s, &tag).await.len(), 1, "no event for an expired one");
}

/// An insert below the cap is written (with its event) when the engine answers at all; at
/// the cap it never is: the engine answers `None` and writes nothing.
pub(super) async fn sessions_insert_if_room(s: &Stores) {
    let sessions = &s.sessions;
    let tag = unique("room");
    let user = unique("room-user");
    let now = now_ms();
    let first = session(&unique("room-a"), Some(&user));
    let event = format!("{tag}:first").into_bytes();
    match sessions
        .insert_session_if_room(&first, 2, Some(&event), C)
        .await
        .expect("insert")
    {
        Some(written) => assert!(written, "a fresh id is written"),
        None => assert!(sessions.insert_session(&first, C).await.expect("insert")),
    }
    let second = session(&unique("room-b"), Some(&user));
    assert!(sessions.insert_session(&second, C).await.expect("insert"));
    // Two sessions, room for two: no insert.
    let third = session(&unique("room-c"), Some(&user));
    let full = sessions
        .insert_session_if_room(&third, 2, Some(format!("{tag}:third").as_bytes()), C)
        .await;
    assert_eq!(full.expect("insert"), None);
    assert!(sessions
        .get_session(&third.id, now)
        .await
        .expect("get")
        .is_none());
    let listed = sessions.list_user_sessions(&user, now, 10).await;
    assert_eq!(listed.expect("list").len(), 2);
    let queued: Vec<String> = ours(s, &tag).await.into_iter().map(|(_, e)| e).collect();
    assert!(
        queued.is_empty() || queued == vec![format!("{tag}:first")],
        "only the written insert's event: {queued:?}"
    );
    // A live id is never overwritten.
    let dup = sessions.insert_session_if_room(&first, 10, None, C).await;
    assert!(matches!(dup.expect("insert"), None | Some(false)));
}
