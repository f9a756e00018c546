//! The deadlines of sessions with live sockets: one ordered map for the whole hub (see
//! `ending` for what the watch does at a deadline).
//!
//! Below the hub, which holds the watch in its state and arms it when a socket connects;
//! the task that checks due sessions and closes their sockets (`ending::run_watch`) is above.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use sessiond_store::Millis;
use tokio::sync::Notify;

use crate::auth::SessionDeadlines;
use crate::conn::lock;

/// A watched session.
pub(crate) struct Watched {
    pub(crate) user: Arc<str>,
    pub(crate) deadlines: SessionDeadlines,
    check_at: Millis,
    /// The idle deadline its sockets were already warned of (`session_expiring`).
    pub(crate) warned: Option<Millis>,
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
    pub(crate) wake: Notify,
    /// `session_expiring` lead time (ms; 0 = no warnings).
    warning_ms: Millis,
}

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
    pub(crate) fn warn_at(&self, d: &SessionDeadlines) -> Option<Millis> {
        (self.warning_ms > 0 && d.idle_window > self.warning_ms && d.idle < d.absolute)
            .then(|| d.idle - self.warning_ms)
    }

    /// The check before an idle deadline (`None` when the absolute deadline comes first):
    /// the warning time, or a tenth of the window before the deadline when there is no
    /// warning. There, socket activity since the last slide extends the session.
    pub(crate) fn pre_check_at(&self, d: &SessionDeadlines) -> Option<Millis> {
        (d.idle < d.absolute).then(|| {
            self.warn_at(d)
                .unwrap_or_else(|| d.idle - (d.idle_window / 10).max(1))
        })
    }

    /// The next check of a session: its pre-deadline check (unless done for this idle
    /// deadline already), else its end.
    pub(crate) fn next_check(&self, d: &SessionDeadlines, warned: Option<Millis>) -> Millis {
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

    pub(crate) fn arm(
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
    pub(crate) fn due(&self, now: Millis) -> Vec<(Arc<str>, Watched)> {
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

    pub(crate) fn first_due(&self) -> Option<Millis> {
        lock(&self.state).queue.first().map(|(at, _)| *at)
    }
}
