//! Sessions ending under live sockets: whatever ends a session — a revoke, a logout, eviction
//! by the per-user cap, idle or absolute expiry, the user's erasure — closes the sockets it authenticated. So does
//! a rotation, for the sockets of the old id (with 4004: the session lives on under its new
//! id, and a socket must not keep the old id's standing).
//!
//! One function, [`Hub::session_ended`], closes them, fed by [`SessionEnded`] events from two
//! sources: the sessions capability's announcements (revoke, logout, eviction; the server
//! forwards them, and a cluster bus can feed the same function later), and the watch below
//! for expiry, which no store announces — expiry is a deadline passing, discovered lazily by
//! whoever reads next.
//!
//! The watch is one timer for the whole hub, not one per socket: a map of the sessions that
//! have live sockets, ordered by their earliest deadline. At a deadline it asks the session
//! authority once (without sliding the session: a watcher must not keep it alive) — a session
//! the app kept using has a later deadline and is simply re-armed, an ended one is closed with
//! the reason its deadlines give. Cost: one entry per session with sockets and one store read
//! per session per idle window, however many sockets the session has. The same timer warns
//! the sockets `session_expiry_warning_s` before an idle deadline (`session_expiring`): a
//! watched session is checked once at its warning time and once at its deadline, so the
//! warning costs one more read, never one per socket. That pre-deadline check (a tenth of
//! the window before the deadline when there is no warning) is also where socket activity is
//! written behind: application frames only stamp their connection, and if any came since the
//! session's last slide, the check extends the session once — no store write per frame.
//!
//! The reasons and events are `session_end`'s and the watch's map is `session_watch`'s (both
//! below the hub, whose state holds them); the task that checks due sessions is here.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::json;
use sessiond_store::{now_ms, Millis};

use crate::auth::SessionDeadlines;
use crate::hub::{frame, Hub, HubInner};
use crate::session_end::LOGOUT_REASON;
pub use crate::session_end::{EndReason, SessionEnded, ROTATED_CLOSE};
use crate::session_watch::{SessionWatch, Watched};

impl Hub {
    /// Every session ending (and rotation) this node acts on — announced here, by another
    /// node over the bus, or found by the expiry watch (for sessions with sockets) — for
    /// what else a session opened (Durable Streams reads with a bound token).
    pub fn subscribe_endings(&self) -> tokio::sync::broadcast::Receiver<SessionEnded> {
        self.inner.endings.subscribe()
    }

    /// Closes the sockets the ended sessions authenticated (all of the user's when `all`)
    /// with `logout_close_code`; v1 and SSE connections first get
    /// `{"type":"session_ended","reason":…}`. Returns how many were closed. This node only:
    /// [`Hub::session_ended`] also tells the other nodes.
    pub(crate) fn end_sessions_here(&self, ended: &SessionEnded) -> usize {
        // Nobody listening is fine.
        let _ = self.inner.endings.send(ended.clone());
        let code = self.inner.config.logout_close_code;
        let notice =
            frame(&json!({"type": "session_ended", "reason": ended.reason.frame_reason()}));
        let mut closed = 0;
        for conn in self.inner.conns.of_user(&ended.user_id) {
            let ours = conn
                .session_id
                .as_deref()
                .is_some_and(|s| ended.session_ids.iter().any(|e| e == s));
            if !(ended.all || ours) {
                continue;
            }
            if ended.reason != EndReason::Rotated {
                let mut details = serde_json::Map::new();
                details.insert("reason".into(), ended.reason.frame_reason().into());
                details.insert("protocol".into(), conn.protocol.into());
                self.inner
                    .authority
                    .security_event(crate::auth::SecurityNote {
                        kind: "socket.closed",
                        user_id: Some(ended.user_id.clone()),
                        session_id: conn.session_id.as_deref().map(str::to_string),
                        details,
                    });
            }
            if ended.reason == EndReason::Rotated {
                conn.close(ROTATED_CLOSE.0, ROTATED_CLOSE.1);
            } else if conn.protocol == "seed" {
                conn.close(code, LOGOUT_REASON);
            } else {
                conn.close_after(notice.clone(), code, ended.reason.close_reason());
            }
            closed += 1;
        }
        metrics::counter!("sessiond_realtime_session_end_closes_total", "reason" => ended.reason.wire())
            .increment(closed as u64);
        if ended.reason == EndReason::Erased {
            // The erasing node deleted the state in the store; this node's copy goes too, so
            // no later write here brings it back.
            let (hub, user) = (self.clone(), ended.user_id.clone());
            tokio::spawn(async move { hub.inner.users.lock(&user).await.forget() });
        }
        closed
    }
}

impl Hub {
    /// The client action answering `session_expiring`: extends the idle deadline of the
    /// session `conn` was opened with and re-arms the watch. 400 for a socket opened without
    /// a session (service key, middleware cookie), 404 when the session already ended.
    pub(crate) async fn extend_session(
        &self,
        conn: &crate::conn::Conn,
    ) -> sessiond_http::ApiResult<SessionDeadlines> {
        use sessiond_http::ApiError;
        let Some(session) = conn.session_id.as_deref() else {
            return Err(ApiError::bad_request(
                "this socket was not opened with a session: nothing to extend",
            ));
        };
        match self.authority().extend_session(session).await {
            Ok(Some(deadlines)) => {
                self.inner.watch.watch(session, &conn.user_id, deadlines);
                Ok(deadlines)
            }
            Ok(None) => Err(ApiError::not_found("session not found or expired")),
            Err(e) => Err(e),
        }
    }
}

/// After an authority error, ask again this much later.
const RETRY_MS: Millis = 1000;
/// The watch task wakes at least this often, so it ends soon after its hub is dropped.
const MAX_SLEEP: Duration = Duration::from_secs(30);

impl Hub {
    /// Starts the task that checks watched sessions at their deadlines (see the module
    /// docs); it ends when the hub is dropped.
    pub(crate) fn start_session_watch(&self) {
        let watch = self.inner.watch.clone();
        tokio::spawn(run_watch(watch, Arc::downgrade(&self.inner)));
    }
}

/// Runs the watch of `watch` for the hub behind `hub` until the hub is dropped.
async fn run_watch(watch: Arc<SessionWatch>, hub: Weak<HubInner>) {
    loop {
        let notified = watch.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wait = match watch.first_due() {
            Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            None => MAX_SLEEP,
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
            }
        }
        let Some(inner) = hub.upgrade() else { return };
        let hub = Hub { inner };
        for (session, watched) in watch.due(now_ms()) {
            check(&hub, &watch, &session, watched).await;
        }
    }
}

/// One due session: re-arm it if it lives on, close its sockets if it ended.
async fn check(hub: &Hub, watch: &SessionWatch, session: &str, watched: Watched) {
    // The latest application frame of the session's sockets; `None`: no socket left.
    let active_at = hub
        .user_connections(&watched.user)
        .iter()
        .filter(|c| c.session_id.as_deref() == Some(session))
        .map(|c| c.active_at())
        .max();
    let Some(active_at) = active_at else {
        return; // its sockets are gone: nothing to close, nothing to watch
    };
    let now = now_ms();
    let reason = match hub.authority().session_deadlines(session).await {
        Ok(Some(d)) if d.idle.min(d.absolute) > now => {
            let warned = watched.warned.filter(|idle| *idle == d.idle);
            let due = watch.pre_check_at(&d).is_some_and(|at| now >= at);
            if due && warned.is_none() {
                // Application frames since the last slide are use of the session.
                if active_at > d.idle - d.idle_window {
                    if let Ok(Some(slid)) = hub.authority().extend_session(session).await {
                        let at = watch.next_check(&slid, None);
                        watch.arm(session, &watched.user, slid, at, None);
                        return;
                    }
                }
                if watch.warn_at(&d).is_some() {
                    warn_expiring(hub, session, &watched.user, d.idle - now);
                }
                let end = d.idle.min(d.absolute);
                watch.arm(session, &watched.user, d, end, Some(d.idle));
            } else {
                let at = watch.next_check(&d, warned);
                watch.arm(session, &watched.user, d, at, warned);
            }
            return;
        }
        Ok(Some(d)) => expiry_reason(&d, now),
        Ok(None) if now >= watched.deadlines.absolute => EndReason::ExpiredAbsolute,
        Ok(None) if now >= watched.deadlines.idle => EndReason::ExpiredIdle,
        // Gone before its deadlines: ended elsewhere (e.g. revoked on another node).
        Ok(None) => EndReason::Revoked,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a session's deadline; retrying");
            let (deadlines, warned) = (watched.deadlines, watched.warned);
            watch.arm(session, &watched.user, deadlines, now + RETRY_MS, warned);
            return;
        }
    };
    hub.session_ended(&SessionEnded {
        user_id: watched.user.to_string(),
        session_ids: vec![session.to_string()],
        all: false,
        reason,
    });
}

/// Sends `{"type":"session_expiring","expires_in_s":N}` to the sockets of `session` (every
/// protocol: for seed C's sockets it is an extra message type).
fn warn_expiring(hub: &Hub, session: &str, user: &str, left_ms: Millis) {
    let expires_in_s = (left_ms.max(0) + 999) / 1000;
    let warning = frame(&json!({"type": "session_expiring", "expires_in_s": expires_in_s}));
    let mut warned = 0u64;
    for conn in hub.inner.conns.of_user(user) {
        if conn.session_id.as_deref() == Some(session) && conn.send(warning.clone()) {
            warned += 1;
        }
    }
    metrics::counter!("sessiond_realtime_session_expiry_warnings_total").increment(warned);
}

fn expiry_reason(d: &SessionDeadlines, now: Millis) -> EndReason {
    if now >= d.absolute {
        EndReason::ExpiredAbsolute
    } else {
        EndReason::ExpiredIdle
    }
}
