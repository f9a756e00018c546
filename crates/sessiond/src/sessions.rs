//! Wiring of sessions and cache (always served), with their security events when the
//! engine stores streams: the sessions service records each event in the same atomic step as
//! the change, and the relay moves them into the `__security` streams (see [`crate::security`]).

use std::sync::Arc;

use sessiond_runtime::{ObjectKind, RuntimeBuilder};
use sessiond_sessions::{CacheService, SessionService, SessionsConfig, SessionsState};
use sessiond_store::SessionRecord;
use sessiond_streams::Streams;

use crate::security;
use crate::supervisor::Task;
use crate::Wiring;

/// Sessions and cache as the server serves them.
pub struct Wired {
    /// The routes' state; `state.sessions` is the service other capabilities consult.
    pub state: SessionsState,
    /// The security events' parts (when enabled and streams are stored).
    pub security: Option<security::Wired>,
    /// The expiry sweeper and the security event relay.
    pub tasks: Vec<Task>,
}

/// Builds the sessions and cache services; `streams` receive the security events.
pub fn wire(wiring: &Wiring<'_>, runtime: &mut RuntimeBuilder, streams: Option<&Streams>) -> Wired {
    let Wiring {
        config,
        stores,
        supervisor,
    } = *wiring;
    let session_objects: ObjectKind<SessionRecord> = runtime.kind("session");
    let user_locks: ObjectKind<()> = runtime.kind("user");
    let sessions_config = Arc::new(SessionsConfig {
        cookies: Some(config.session_cookies()),
        ..config.sessions.clone()
    });
    let mut service = SessionService::new(
        stores.sessions.clone(),
        sessions_config.clone(),
        session_objects,
        user_locks,
        stores.admin.exclusive(),
    );
    // Security events need the streams they are relayed to.
    let security = streams
        .filter(|_| config.security.enabled)
        .map(|streams| security::wire(config, stores, streams.clone()));
    if let Some(wired) = &security {
        service = service.with_security(wired.events.clone());
    }
    let mut tasks = vec![Task::new(
        "sessions-sweeper",
        sessiond_sessions::sweeper::run(
            stores.sessions.clone(),
            stores.cache.clone(),
            sessions_config.clone(),
            security.as_ref().map(|w| w.events.clone()),
            supervisor.stopped(),
        ),
    )];
    tasks.extend(security.as_ref().map(|w| {
        Task::new(
            "security-event-relay",
            w.relay.clone().run(supervisor.stopped()),
        )
    }));
    let cache = CacheService::new(stores.cache.clone(), sessions_config);
    Wired {
        state: SessionsState::new(service, cache),
        security,
        tasks,
    }
}
