//! When the user last proved who they are travels with the session on every engine: stored
//! at insert, untouched by a touch, replaced by a compare-and-set (a re-authentication),
//! carried by rotation and listed with the user's sessions.

use super::{session, unique, C, HOUR};
use crate::{now_ms, Cas, RecordWrite, Rotation, Stores};

pub(super) async fn sessions_auth_time(s: &Stores) {
    let user = unique("auth-user");
    let mut rec = session(&unique("auth"), Some(&user));
    rec.auth_time = rec.created_at - 1234;
    assert!(s
        .sessions
        .insert_session(&rec, C)
        .await
        .expect("store call"));
    let now = now_ms();
    let read = |id: String| async move {
        s.sessions
            .get_session(&id, now_ms())
            .await
            .expect("store call")
            .expect("live session")
    };
    assert_eq!(
        read(rec.id.clone()).await.auth_time,
        rec.auth_time,
        "insert"
    );

    assert!(s
        .sessions
        .touch_session(&rec.id, now + 2 * HOUR, now, now, C)
        .await
        .expect("store call"));
    assert_eq!(
        read(rec.id.clone()).await.auth_time,
        rec.auth_time,
        "a touch is a use, not a re-authentication"
    );

    // A re-authentication: the same record with a later auth_time and the next version.
    let mut reauth = read(rec.id.clone()).await;
    reauth.auth_time = now;
    reauth.version += 1;
    assert_eq!(
        s.sessions
            .replace_session(RecordWrite::new(&reauth, rec.version, now))
            .await
            .expect("store call"),
        Cas::Written
    );
    assert_eq!(
        read(rec.id.clone()).await,
        reauth,
        "replace stores auth_time"
    );

    // A stale writer cannot set it back: its compare-and-set fails.
    let mut stale = rec.clone();
    stale.version += 1;
    assert_eq!(
        s.sessions
            .replace_session(RecordWrite::new(&stale, rec.version, now))
            .await
            .expect("store call"),
        Cas::VersionMismatch
    );
    assert_eq!(read(rec.id.clone()).await.auth_time, now);

    let mut rotated = reauth.clone();
    rotated.id = s.sessions.rotation_id(&rec.id, unique("auth-new"));
    rotated.version += 1;
    assert_eq!(
        s.sessions
            .rotate_session(&rec.id, RecordWrite::new(&rotated, reauth.version, now))
            .await
            .expect("store call"),
        Rotation::Rotated
    );
    assert_eq!(
        read(rotated.id.clone()).await.auth_time,
        now,
        "rotation carries auth_time"
    );
    let listed = s
        .sessions
        .list_user_sessions(&user, now, 10)
        .await
        .expect("store call");
    assert_eq!(
        listed.iter().map(|r| r.auth_time).collect::<Vec<_>>(),
        vec![now],
        "listing carries auth_time"
    );
}
