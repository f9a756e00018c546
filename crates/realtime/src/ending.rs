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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::json;
use sessiond_store::{now_ms, Millis};
use tokio::sync::Notify;

use crate::auth::SessionDeadlines;
use crate::conn::lock;
use crate::hub::{frame, Hub, HubInner, LOGOUT_REASON};

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Revoked one by one, or all but one.
    Revoked,
    /// Every session of the user revoked: log out everywhere.
    LoggedOut,
    /// Evicted to make room under the per-user session cap.
    Evicted,
    /// The idle deadline passed.
    ExpiredIdle,
    /// The absolute deadline passed.
    ExpiredAbsolute,
    /// The user was erased (`DELETE /v1/users/{u}`): every session and socket of the user.
    Erased,
    /// Not an ending: the session continues under a new id. What the old id opened closes
    /// with [`ROTATED_CLOSE`] (reconnect with the current credential), without a
    /// `session_ended` frame.
    Rotated,
}

/// The close of sockets opened with a session id that was rotated away, on every protocol.
pub const ROTATED_CLOSE: (u16, &str) = (4004, "Session rotated");

impl EndReason {
    /// The `reason` of the v1 `session_ended` frame: every revoke is `revoked` (log out
    /// everywhere is told apart by its close reason).
    pub fn frame_reason(self) -> &'static str {
        match self {
            EndReason::LoggedOut => "revoked",
            other => other.wire(),
        }
    }

    /// The name that tells reasons apart (bus signals between nodes, metrics labels).
    pub fn wire(self) -> &'static str {
        match self {
            EndReason::Revoked => "revoked",
            EndReason::LoggedOut => "logged_out",
            EndReason::Evicted => "evicted",
            EndReason::ExpiredIdle => "expired_idle",
            EndReason::ExpiredAbsolute => "expired_absolute",
            EndReason::Erased => "erased",
            EndReason::Rotated => "rotated",
        }
    }

    /// The close frame's reason text on v1 and SSE connections (seed C's sockets always get
    /// [`LOGOUT_REASON`], which its React hook compares).
    pub fn close_reason(self) -> &'static str {
        match self {
            EndReason::Revoked => "Session revoked",
            EndReason::LoggedOut => LOGOUT_REASON,
            EndReason::Evicted => "Session evicted",
            EndReason::ExpiredIdle => "Session expired (idle)",
            EndReason::ExpiredAbsolute => "Session expired (absolute)",
            EndReason::Erased => "User erased",
            EndReason::Rotated => ROTATED_CLOSE.1,
        }
    }
}

/// Sessions of one user that ended (or whose ids were rotated away).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEnded {
    /// Whose sessions.
    pub user_id: String,
    /// The ended session ids.
    pub session_ids: Vec<String>,
    /// Every session of the user ended (log out everywhere): close every socket of the user,
    /// whatever authenticated it.
    pub all: bool,
    /// Why.
    pub reason: EndReason,
}

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

/// A watched session.
struct Watched {
    user: Arc<str>,
    deadlines: SessionDeadlines,
    check_at: Millis,
    /// The idle deadline its sockets were already warned of (`session_expiring`).
    warned: Option<Millis>,
}

#[derive(Default)]
struct WatchState {
    /// (check at, session id), earliest first.
    queue: BTreeSet<(Millis, Arc<str>)>,
    sessions: HashMap<Arc<str>, Watched>,
}

/// The deadlines of sessions that have live sockets (see the module docs).
#[derive(Default)]
pub(crate) struct SessionWatch {
    state: Mutex<WatchState>,
    wake: Notify,
    /// `session_expiring` lead time (ms; 0 = no warnings).
    warning_ms: Millis,
}

/// After an authority error, ask again this much later.
const RETRY_MS: Millis = 1000;
/// The watch task wakes at least this often, so it ends soon after its hub is dropped.
const MAX_SLEEP: Duration = Duration::from_secs(30);

impl SessionWatch {
    /// A watch warning `warning_s` before idle deadlines (0 = never).
    pub(crate) fn new(warning_s: u64) -> SessionWatch {
        SessionWatch {
            warning_ms: Millis::try_from(warning_s.saturating_mul(1000)).unwrap_or(Millis::MAX),
            ..SessionWatch::default()
        }
    }

    /// When to warn of the idle deadline of `d`: `None` when warnings are off, when the
    /// absolute deadline comes first, or when the whole idle window is not longer than the
    /// lead time (the session would be "expiring" from its first use).
    fn warn_at(&self, d: &SessionDeadlines) -> Option<Millis> {
        (self.warning_ms > 0 && d.idle_window > self.warning_ms && d.idle < d.absolute)
            .then(|| d.idle - self.warning_ms)
    }

    /// The check before an idle deadline (`None` when the absolute deadline comes first):
    /// the warning time, or a tenth of the window before the deadline when there is no
    /// warning. There, socket activity since the last slide extends the session.
    fn pre_check_at(&self, d: &SessionDeadlines) -> Option<Millis> {
        (d.idle < d.absolute).then(|| {
            self.warn_at(d)
                .unwrap_or_else(|| d.idle - (d.idle_window / 10).max(1))
        })
    }

    /// The next check of a session: its pre-deadline check (unless done for this idle
    /// deadline already), else its end.
    fn next_check(&self, d: &SessionDeadlines, warned: Option<Millis>) -> Millis {
        let end = d.idle.min(d.absolute);
        match self.pre_check_at(d) {
            Some(at) if warned != Some(d.idle) => at.min(end),
            _ => end,
        }
    }

    /// Watches `session` of `user` until its earliest deadline, warning before it (an
    /// earlier check already armed for it stays).
    pub(crate) fn watch(&self, session: &str, user: &str, deadlines: SessionDeadlines) {
        let warned = lock(&self.state)
            .sessions
            .get(session)
            .and_then(|w| w.warned.filter(|idle| *idle == deadlines.idle));
        let at = self.next_check(&deadlines, warned);
        self.arm(session, user, deadlines, at, warned);
    }

    fn arm(
        &self,
        session: &str,
        user: &str,
        deadlines: SessionDeadlines,
        check_at: Millis,
        warned: Option<Millis>,
    ) {
        let mut st = lock(&self.state);
        let earliest = st.queue.first().map(|(at, _)| *at);
        if let Some(old) = st.sessions.get(session) {
            if old.check_at <= check_at {
                return;
            }
            let key = (old.check_at, Arc::<str>::from(session));
            st.queue.remove(&key);
        }
        let id: Arc<str> = Arc::from(session);
        st.queue.insert((check_at, id.clone()));
        st.sessions.insert(
            id,
            Watched {
                user: Arc::from(user),
                deadlines,
                check_at,
                warned,
            },
        );
        metrics::gauge!("sessiond_realtime_watched_sessions").set(st.sessions.len() as f64);
        drop(st);
        if earliest.is_none_or(|at| check_at < at) {
            self.wake.notify_one();
        }
    }

    /// Removes and returns the sessions due at `now`.
    fn due(&self, now: Millis) -> Vec<(Arc<str>, Watched)> {
        let mut st = lock(&self.state);
        let mut out = Vec::new();
        while let Some((at, _)) = st.queue.first() {
            if *at > now {
                break;
            }
            let Some((_, id)) = st.queue.pop_first() else {
                break;
            };
            if let Some(watched) = st.sessions.remove(&id) {
                out.push((id, watched));
            }
        }
        metrics::gauge!("sessiond_realtime_watched_sessions").set(st.sessions.len() as f64);
        out
    }

    fn first_due(&self) -> Option<Millis> {
        lock(&self.state).queue.first().map(|(at, _)| *at)
    }
}

/// Runs the watch of `watch` for the hub behind `hub` until the hub is dropped.
pub(crate) async fn run_watch(watch: Arc<SessionWatch>, hub: Weak<HubInner>) {
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
