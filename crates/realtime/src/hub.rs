//! The hub: one object per user (seed C's User Session Durable Object) and the rules every
//! entry point — sockets, HTTP, session revocations — goes through.
//!
//! Every change of a user's state and every fan-out to that user's sockets happens under the
//! runtime's lock of that user's object, so all devices see changes in the same order and a
//! read-modify-write of `activeGames` cannot lose an update (seed C relied on a Durable
//! Object's single thread for that). Presence follows the sockets: `online` when the first
//! socket opens, `offline` when the last one closes (a closing socket is already out of the
//! registry when the count is taken). On several nodes the count and the transition are the
//! cluster's (see [`crate::presence`]).

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};
use sessiond_http::{ApiError, ApiKeys, ApiResult};
use sessiond_runtime::{ObjectGuard, ObjectKind, RuntimeError};
use sessiond_store::{now_ms, Durability};
use tokio_util::sync::CancellationToken;

use crate::auth::SessionAuthority;
use crate::channels::Channels;
use crate::cluster::{Action, Cluster};
use crate::config::RealtimeConfig;
use crate::conn::{Cap, Conn, ConnInfo, ConnReceiver, Connections};
use crate::events::{EventSink, Events};
use crate::presence_sets::ClusterPresence;
pub use crate::session_end::LOGOUT_REASON;
use crate::session_end::{EndReason, SessionEnded};
use crate::session_watch::SessionWatch;
use crate::state::{Presence, UserState};
use crate::webhook::WebhookSink;

/// Object kind of the persisted per-user state.
pub const USER_KIND: &str = "rt_user";

/// Close code and reason when the state is cleared through the HTTP API.
pub const CLEARED_CLOSE: (u16, &str) = (4002, "User state cleared");

/// The realtime hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    pub(crate) config: RealtimeConfig,
    pub(crate) users: ObjectKind<UserState>,
    pub(crate) conns: Connections,
    pub(crate) channels: Channels,
    pub(crate) authority: Arc<dyn SessionAuthority>,
    pub(crate) keys: ApiKeys,
    pub(crate) events: Events,
    pub(crate) watch: Arc<SessionWatch>,
    /// The engine's bus when the hub runs on several nodes ([`Hub::attach_bus`]).
    pub(crate) cluster: std::sync::OnceLock<Cluster>,
    /// The engine's presence store when presence is cluster-wide ([`Hub::attach_presence`]).
    pub(crate) presence: std::sync::OnceLock<ClusterPresence>,
    /// Cancelled when the server starts draining: sockets are closed and new ones refused.
    pub(crate) draining: CancellationToken,
    /// Every ending this node acts on (its own and other nodes'), for other capabilities
    /// ([`Hub::subscribe_endings`]).
    pub(crate) endings: tokio::sync::broadcast::Sender<SessionEnded>,
}

/// The error code of a connect refused by a connection cap (a WebSocket is then accepted and
/// closed at once with 1013, which a browser can read; SSE gets the 429).
pub const CAP_ERROR: &str = "too_many_connections";

/// The close reason (code 1001) of every connection at server shutdown.
pub const SHUTDOWN_REASON: &str = "Server shutting down";

/// Serializes a frame once so it can be queued to many sockets.
pub fn frame(value: &Value) -> Utf8Bytes {
    Utf8Bytes::from(value.to_string())
}

/// Seed C's `error` frame.
pub fn error_frame(message: &str) -> Utf8Bytes {
    frame(&json!({ "type": "error", "message": message }))
}

pub(crate) fn storage_error(e: RuntimeError) -> ApiError {
    ApiError::from(e)
}

impl Hub {
    /// A hub over the persistent kind `users` (see [`USER_KIND`]). User online/offline
    /// events go to the configured webhook and to `sinks` (the server adds a stream sink).
    pub fn new(
        config: RealtimeConfig,
        users: ObjectKind<UserState>,
        authority: Arc<dyn SessionAuthority>,
        keys: ApiKeys,
        mut sinks: Vec<Arc<dyn EventSink>>,
    ) -> Hub {
        if let Some(webhook) = WebhookSink::from_config(&config.events) {
            sinks.push(Arc::new(webhook));
        }
        let events = Events::start(&config.events, sinks);
        users.set_idle_after(std::time::Duration::from_secs(config.idle_evict_s));
        let warning_s = config.session_expiry_warning_s;
        let hub = Hub {
            inner: Arc::new(HubInner {
                channels: Channels::new(config.retention(), config.budgets()),
                config,
                users,
                conns: Connections::default(),
                authority,
                keys,
                events,
                watch: Arc::new(SessionWatch::new(warning_s)),
                cluster: std::sync::OnceLock::new(),
                presence: std::sync::OnceLock::new(),
                draining: CancellationToken::new(),
                endings: tokio::sync::broadcast::channel(1024).0,
            }),
        };
        hub.start_session_watch();
        // Drop unused channels periodically; the task ends when the hub is dropped.
        let weak = Arc::downgrade(&hub.inner);
        let every = std::time::Duration::from_secs(hub.inner.config.recovery_window_s.clamp(1, 30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                inner.channels.sweep();
                inner.prune_mirrors();
            }
        });
        hub
    }

    /// The channel registry.
    pub fn channels(&self) -> &Channels {
        &self.inner.channels
    }

    /// The configuration in force.
    pub fn config(&self) -> &RealtimeConfig {
        &self.inner.config
    }

    /// Users whose state is in memory now (evicted ones reload on next use).
    pub fn resident_users(&self) -> usize {
        self.inner.users.resident_count()
    }

    /// Open sockets in this process.
    pub fn connections(&self) -> u64 {
        self.inner.conns.total()
    }

    /// The open socket with id `id`.
    pub fn find_connection(&self, id: u64) -> Option<Arc<Conn>> {
        self.inner.conns.find(id)
    }

    /// The open sockets of `user`.
    pub fn user_connections(&self, user: &str) -> Vec<Arc<Conn>> {
        self.inner.conns.of_user(user)
    }

    /// Rejects an empty or over-long id (400).
    pub fn check_id(&self, what: &str, id: &str) -> ApiResult<()> {
        if id.is_empty() {
            return Err(ApiError::bad_request(format!("{what} must not be empty")));
        }
        if id.len() > self.inner.config.max_id_bytes {
            return Err(ApiError::bad_request(format!(
                "{what} is longer than {} bytes",
                self.inner.config.max_id_bytes
            )));
        }
        Ok(())
    }

    /// Locks `user` and loads their state (an empty state for a user never seen).
    pub(crate) async fn open(&self, user: &str) -> ApiResult<(ObjectGuard<UserState>, UserState)> {
        let mut guard = self.inner.users.lock(user).await;
        let state = match guard.load().await.map_err(storage_error)? {
            Some(state) => state.clone(),
            None => UserState::empty(user),
        };
        Ok((guard, state))
    }

    /// Persists `state` as the user's object.
    pub(crate) async fn save(
        guard: &mut ObjectGuard<UserState>,
        state: UserState,
    ) -> ApiResult<()> {
        guard
            .save(state, Durability::Confirmed)
            .await
            .map_err(storage_error)
    }

    /// Registers a new socket of `info.user_id` and queues `first_frame` (built under the
    /// user's lock, so it precedes every later broadcast). Refused with 429 when the user
    /// already has the maximum number of sockets.
    pub async fn connect(
        &self,
        info: ConnInfo,
        first_frame: impl FnOnce(&UserState, &Conn) -> Option<Utf8Bytes>,
    ) -> ApiResult<(Arc<Conn>, ConnReceiver)> {
        let user = info.user_id.clone();
        let watched = info.session_id.clone().zip(info.deadlines);
        let (mut guard, mut state) = self.open(&user).await?;
        let (conn, rx) = Conn::new(info, self.inner.config.outbound_queue);
        let config = &self.inner.config;
        let refused = |cap: Cap| {
            let (label, message) = match cap {
                Cap::Total => ("total", "Too many connections"),
                Cap::User => ("user", "Too many connections for this user"),
            };
            metrics::counter!("sessiond_realtime_connections_refused_total", "cap" => label)
                .increment(1);
            crate::auth::refused(self.inner.authority.as_ref(), 429);
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                CAP_ERROR,
                message,
            )
        };
        let mut open = self
            .inner
            .conns
            .add(
                &conn,
                config.max_sockets_per_user,
                config.max_connections as u64,
            )
            .map_err(refused)?;
        if self.inner.draining.is_cancelled() {
            self.inner.conns.remove(&conn);
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                SHUTDOWN_REASON,
            ));
        }
        // On several nodes the user's limit, count and online transition are cluster-wide.
        let mut online = (open == 1).then_some(None);
        match self
            .inner
            .presence_join(&conn, config.max_sockets_per_user)
            .await
        {
            Ok(None) => {}
            Ok(Some(joined)) if joined.admitted => {
                open = joined.live;
                online = joined.online.map(Some);
            }
            Ok(Some(_)) => {
                self.inner.conns.remove(&conn);
                return Err(refused(Cap::User));
            }
            Err(e) => {
                self.inner.conns.remove(&conn);
                return Err(e);
            }
        }
        if let Some((session, deadlines)) = watched {
            self.inner.watch.watch(&session, &user, deadlines);
        }
        if open == 1 && state.presence != Presence::Online {
            state.presence = Presence::Online;
            state.last_active = Some(now_ms());
            if let Err(e) = Self::save(&mut guard, state.clone()).await {
                self.inner.conns.remove(&conn);
                self.inner.presence_leave(&conn).await;
                return Err(e);
            }
        }
        match online {
            Some(None) => self.inner.events.changed(&user, true),
            Some(Some(generation)) => self.inner.events.transition(&user, true, generation),
            None => {}
        }
        if let Some(first) = first_frame(&state, &conn) {
            conn.send(first);
        }
        metrics::counter!("sessiond_realtime_connects_total").increment(1);
        Ok((conn, rx))
    }

    /// Unregisters a closed socket; the user goes `offline` when it was their last one.
    pub async fn disconnect(&self, conn: &Arc<Conn>) {
        let subscribed = std::mem::take(&mut *crate::conn::lock(&conn.subscriptions));
        for subscription in subscribed {
            subscription.channel.unsubscribe(conn);
        }
        let mut guard = self.inner.users.lock(&conn.user_id).await;
        let here = self.inner.conns.remove(conn);
        if self.inner.presence.get().is_some() {
            // Cluster-wide: the engine says whether this was the user's last socket.
            let Some(left) = self.inner.presence_leave(conn).await else {
                return;
            };
            if let Some(generation) = left.offline {
                self.inner
                    .events
                    .transition(&conn.user_id, false, generation);
            }
            if left.live > 0 {
                return;
            }
        } else {
            if here > 0 {
                return;
            }
            self.inner.events.changed(&conn.user_id, false);
        }
        // On several nodes another node may have changed or deleted the state (an erasure, a
        // clear): read the store, not this node's copy, before writing "offline".
        let loaded = match self.inner.presence.get() {
            Some(_) => guard.reload().await,
            None => guard.load().await,
        };
        let stored = match loaded {
            Ok(stored) => stored.cloned(),
            Err(e) => {
                tracing::warn!(error = %e, user = %conn.user_id, "cannot load state to mark offline");
                return;
            }
        };
        // An anonymous browser user (`client:<cID>`) with nothing worth keeping leaves no row:
        // every cookie a bot presents would otherwise be a permanent state row.
        let anonymous = conn.user_id.starts_with(crate::auth::CLIENT_USER_PREFIX);
        if anonymous && stored.as_ref().is_some_and(UserState::is_empty) {
            if let Err(e) = guard.delete(Durability::Confirmed).await {
                tracing::warn!(error = %e, user = %conn.user_id, "cannot drop an anonymous user's state");
            }
            return;
        }
        // A cleared (absent) state stays absent: the sockets closed because of the clear.
        if let Some(mut state) = stored.filter(|s| s.presence != Presence::Offline) {
            state.presence = Presence::Offline;
            state.last_active = Some(now_ms());
            if let Err(e) = Self::save(&mut guard, state).await {
                tracing::warn!(error = ?e, user = %conn.user_id, "cannot persist offline presence");
            }
        }
    }

    /// Queues `value` to every socket of `user`; returns how many sockets got it.
    /// On several nodes, the other nodes' sockets get it too (the count is this node's).
    pub fn broadcast(&self, user: &str, value: &Value) -> usize {
        self.act_everywhere(Action::Frame {
            user: user.to_string(),
            frame: value.to_string(),
            seed_only: false,
        })
    }

    /// The HTTP state view of `user`.
    pub async fn http_state(&self, user: &str) -> ApiResult<Value> {
        let (guard, mut state) = self.open(user).await?;
        let open = self.inner.open_count(user).await?;
        drop(guard);
        if open == 0 {
            // Presence follows the sockets: a state persisted as online by a process that
            // crashed with sockets open is reported as what it is now.
            state.presence = Presence::Offline;
        }
        Ok(state.http_state(open))
    }

    /// Deletes the user's state and closes their sockets.
    pub async fn clear(&self, user: &str) -> ApiResult<usize> {
        let mut guard = self.inner.users.lock(user).await;
        guard
            .delete(Durability::Confirmed)
            .await
            .map_err(storage_error)?;
        let (code, reason) = CLEARED_CLOSE;
        Ok(self.act_everywhere(Action::Close {
            user: user.to_string(),
            code,
            reason: reason.to_string(),
        }))
    }

    /// Logs the user out everywhere: revokes their sessions (so reconnects are refused),
    /// closes every socket with the logout code, and resets games and presence.
    pub async fn logout_all(&self, user: &str) -> ApiResult<usize> {
        match self.inner.authority.revoke_user(user).await {
            Ok(n) => tracing::info!(user, revoked = n, "logout on all devices"),
            Err(e) => tracing::error!(user, error = %e, "cannot revoke sessions on logout_all"),
        }
        let (mut guard, mut state) = self.open(user).await?;
        let closed = self.session_ended(&SessionEnded {
            user_id: user.to_string(),
            session_ids: Vec::new(),
            all: true,
            reason: EndReason::LoggedOut,
        });
        state.active_games.clear();
        state.presence = Presence::Offline;
        state.last_active = Some(now_ms());
        Self::save(&mut guard, state).await?;
        Ok(closed)
    }

    /// Starts the drain when `server` is cancelled (the server's one shutdown token): every
    /// socket and SSE connection is told at once (1001 with a reason, so clients reconnect
    /// elsewhere while HTTP requests still finish), and new connections are refused with 503.
    pub fn drain_on(&self, server: CancellationToken) {
        // Weak: a pending drain must not keep a dropped hub alive.
        let hub = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            server.cancelled().await;
            if let Some(inner) = hub.upgrade() {
                Hub { inner }.begin_drain();
            }
        });
    }

    fn begin_drain(&self) {
        // The flag first: a connect that registers after the sweep below sees it and backs out.
        self.inner.draining.cancel();
        let n = self
            .inner
            .conns
            .close_all(crate::conn::CLOSE_GOING_AWAY, SHUTDOWN_REASON);
        tracing::info!(
            connections = n,
            "realtime: closing every connection (server shutdown)"
        );
    }

    /// Server shutdown: closes every socket with 1001 (if [`drain_on`](Self::drain_on) has
    /// not yet) and waits (at most `grace`) until their tasks have unregistered them, so
    /// presence is persisted before the engine closes.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        if !self.inner.draining.is_cancelled() {
            self.begin_drain();
        }
        if self.inner.conns.total() == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.inner.conns.total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The service API keys (for handlers that check them).
    pub fn keys(&self) -> &ApiKeys {
        &self.inner.keys
    }

    /// The session authority.
    pub fn authority(&self) -> &dyn SessionAuthority {
        self.inner.authority.as_ref()
    }
}
