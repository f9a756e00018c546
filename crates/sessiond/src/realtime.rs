//! Wiring of the realtime hub: the sessions capability as its session authority, and session
//! endings (revoke, logout, eviction) forwarded to live sockets.
//!
//! The hub only knows the `SessionAuthority` trait; this module is where "a token is a
//! `/v1/sessions` id", "the middleware's signed cookie proves a browser" and "revoking a
//! user's sessions closes their sockets" are decided, so no capability depends on another.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use sessiond_http::{ApiError, ApiKeys};
use sessiond_middleware::Decider;
use sessiond_realtime::{
    EndReason, Hub, SessionAuthority, SessionDeadlines, SessionEnded, SessionUser,
};
use sessiond_runtime::{JsonCodec, RuntimeBuilder};
use sessiond_sessions::{Revocation, SessionService};
use sessiond_store::{Durability, SessionOrigin, SessionRecord};
use sessiond_streams::Streams;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::supervisor::Task;
use crate::Wiring;

/// Session tokens are `/v1/sessions` ids; revoking is the sessions service's revoke-all; a
/// browser without a token is identified by the session middleware's signed cookie, verified
/// by the middleware's own decider (same keys, same layout).
struct SessionsAuthority {
    sessions: SessionService,
    middleware: Option<Decider>,
}

#[async_trait::async_trait]
impl SessionAuthority for SessionsAuthority {
    async fn authenticate(&self, token: &str) -> Result<Option<SessionUser>, ApiError> {
        if self.sessions.check_id("session id", token).is_err() {
            return Ok(None);
        }
        match self.sessions.get(token).await {
            Ok(record) => Ok(record.user_id.clone().map(|user_id| SessionUser {
                user_id,
                deadlines: Some(deadlines(&record)),
                open_route: record.origin == SessionOrigin::OpenRoute,
                session_id: Some(record.id),
            })),
            Err(e) if e.status.is_client_error() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn revoke_user(&self, user_id: &str) -> Result<usize, ApiError> {
        self.sessions
            .revoke_user(user_id, None, Durability::Confirmed)
            .await
            .map(|ids| ids.len())
    }

    fn security_event(&self, note: sessiond_realtime::SecurityNote) {
        if let Some(security) = self.sessions.security() {
            security.record(
                note.kind,
                note.user_id.as_deref(),
                note.session_id.as_deref(),
                note.details,
            );
        }
    }

    async fn session_deadlines(&self, id: &str) -> Result<Option<SessionDeadlines>, ApiError> {
        match self.sessions.peek(id).await {
            Ok(record) => Ok(record.as_ref().map(deadlines)),
            Err(e) if e.status.is_client_error() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn extend_session(&self, id: &str) -> Result<Option<SessionDeadlines>, ApiError> {
        match self.sessions.touch(id, Durability::Confirmed).await {
            Ok(record) => Ok(Some(deadlines(&record))),
            Err(e) if e.status.is_client_error() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn middleware_client(&self, cookie_header: &str) -> Option<String> {
        self.middleware.as_ref()?.verified_client(cookie_header)
    }
}

fn deadlines(record: &SessionRecord) -> SessionDeadlines {
    SessionDeadlines {
        idle: record.idle_expires_at,
        absolute: record.absolute_expires_at,
        idle_window: record.idle_ttl_ms,
    }
}

/// The hub's view of a session ending the sessions capability announced.
fn ended(r: Revocation) -> SessionEnded {
    SessionEnded {
        user_id: r.user_id,
        session_ids: r.session_ids,
        all: r.all,
        reason: match r.reason {
            sessiond_sessions::EndReason::Revoked => EndReason::Revoked,
            sessiond_sessions::EndReason::LoggedOut => EndReason::LoggedOut,
            sessiond_sessions::EndReason::Evicted => EndReason::Evicted,
            sessiond_sessions::EndReason::Erased => EndReason::Erased,
            sessiond_sessions::EndReason::Rotated => EndReason::Rotated,
        },
    }
}

/// The realtime capability as the server serves it.
pub struct Wired {
    /// The hub (export and erasure ask it; the drain waits for it).
    pub hub: Hub,
    /// Its routes.
    pub router: Router,
    /// Forwards the sessions capability's revocations to live sockets.
    pub tasks: Vec<Task>,
}

/// Builds the hub when realtime is enabled. On a shared engine its channels, user-directed
/// actions and presence span every node. User online/offline events also go to the
/// configured Durable Stream when the engine stores streams. `middleware` (when enabled)
/// vouches for browsers by cookie.
pub fn wire(
    wiring: &Wiring<'_>,
    keys: ApiKeys,
    runtime: &mut RuntimeBuilder,
    sessions: &SessionService,
    streams: Option<&Streams>,
    middleware: Option<Decider>,
) -> Option<Wired> {
    let Wiring {
        config,
        stores,
        supervisor,
    } = *wiring;
    if !config.realtime.enabled {
        return None;
    }
    let users = runtime.persistent_kind(sessiond_realtime::USER_KIND, JsonCodec);
    let mut sinks: Vec<Arc<dyn sessiond_realtime::EventSink>> = Vec::new();
    let path = &config.realtime.events.stream;
    if let Some(streams) = streams.filter(|_| !path.is_empty()) {
        sinks.push(Arc::new(StreamSink {
            streams: streams.clone(),
            path: path.clone(),
        }));
    }
    let mut realtime = config.realtime.clone();
    realtime.session_expiry_warning_s = config.sessions.expiry_warning_s;
    realtime.cookies = config.session_cookies();
    let hub = Hub::new(
        realtime,
        users,
        Arc::new(SessionsAuthority {
            sessions: sessions.clone(),
            middleware,
        }),
        keys,
        sinks,
    );
    if let Some(bus) = stores.realtime.clone() {
        hub.attach_bus(bus);
    }
    if let Some(presence) = stores.presence.clone() {
        hub.attach_presence(presence);
    }
    hub.drain_on(supervisor.token());
    let forward = forward_endings(
        sessions.subscribe_revocations(),
        supervisor.stopped(),
        "realtime hub missed session revocations",
        {
            let hub = hub.clone();
            move |r| {
                hub.session_ended(&ended(r));
            }
        },
    );
    Some(Wired {
        router: sessiond_realtime::router(hub.clone()),
        hub,
        tasks: vec![Task::new("realtime-session-endings", forward)],
    })
}

/// Hands each message of `from` to `deliver` until `stop` (or the sender is gone); a
/// receiver that fell behind logs `lagged` with how many it missed and goes on.
pub(crate) async fn forward_endings<T: Clone>(
    mut from: broadcast::Receiver<T>,
    stop: impl Future<Output = ()>,
    lagged: &'static str,
    mut deliver: impl FnMut(T),
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            message = from.recv() => match message {
                Ok(message) => deliver(message),
                Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "{lagged}"),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Appends each user event to a Durable Stream (JSON mode), created on first use.
struct StreamSink {
    streams: Streams,
    path: String,
}

#[async_trait::async_trait]
impl sessiond_realtime::EventSink for StreamSink {
    fn name(&self) -> &str {
        "stream"
    }

    async fn deliver(
        &self,
        event: &sessiond_realtime::UserEvent,
    ) -> Result<(), sessiond_realtime::SinkError> {
        use axum::http::{HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let body = serde_json::to_vec(event)?;
        let empty = axum::body::Bytes::new();
        sessiond_streams::create::create(&self.streams, &self.path, &headers, empty, "/").await?;
        sessiond_streams::append::append(&self.streams, &self.path, &headers, body.into()).await?;
        Ok(())
    }
}
