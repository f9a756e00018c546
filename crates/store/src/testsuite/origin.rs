//! How a session was created is stored with it, on every engine, and never changes.

use super::{session, unique, C};
use crate::{now_ms, RecordWrite, SessionOrigin, Stores};

/// Insert, get, list and replace keep the origin; a replace cannot launder an open-route
/// session into a service one.
pub(super) async fn sessions_origin(s: &Stores) {
    let user = unique("origin-user");
    let keyed = session(&unique("keyed"), Some(&user));
    let mut open = session(&unique("open"), Some(&user));
    open.origin = SessionOrigin::OpenRoute;
    open.created_at += 1;
    for record in [&keyed, &open] {
        assert!(s
            .sessions
            .insert_session(record, C)
            .await
            .expect("store call"));
    }
    let now = now_ms();
    let got = s
        .sessions
        .get_session(&open.id, now)
        .await
        .expect("store call")
        .expect("open-route session stored");
    assert_eq!(got.origin, SessionOrigin::OpenRoute, "origin stored");
    assert_eq!(got, open, "get returns exactly what was inserted");
    let got = s
        .sessions
        .get_session(&keyed.id, now)
        .await
        .expect("store call")
        .expect("keyed session stored");
    assert_eq!(got.origin, SessionOrigin::Service);
    let listed: Vec<(String, SessionOrigin)> = s
        .sessions
        .list_user_sessions(&user, now, 10)
        .await
        .expect("store call")
        .into_iter()
        .map(|r| (r.id, r.origin))
        .collect();
    assert_eq!(
        listed,
        vec![
            (keyed.id.clone(), SessionOrigin::Service),
            (open.id.clone(), SessionOrigin::OpenRoute)
        ],
        "listing carries the origin"
    );
    let mut next = open.clone();
    next.version = 2;
    next.origin = SessionOrigin::Service;
    next.data = r#"{"b":2}"#.into();
    assert_eq!(
        s.sessions
            .replace_session(RecordWrite::new(&next, 1, now))
            .await
            .expect("store call"),
        crate::Cas::Written
    );
    let got = s
        .sessions
        .get_session(&open.id, now)
        .await
        .expect("store call")
        .expect("still live");
    assert_eq!(got.data, next.data, "replaced");
    assert_eq!(
        got.origin,
        SessionOrigin::OpenRoute,
        "replace keeps the origin"
    );
    s.sessions
        .delete_user_sessions(&user, None, now, C)
        .await
        .expect("store call");
}
