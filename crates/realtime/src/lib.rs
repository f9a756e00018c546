//! The realtime capability: a per-user WebSocket hub, what seed C's User Session Durable
//! Object did for one app, for any web stack.
//!
//! Every device of a user connects to that user's object; the object keeps the user's state
//! (`activeGames`, `presence`, `lastActive`) in the engine and fans changes out to all the
//! user's sockets. An idle user costs only their open sockets (small buffers, one parked task
//! each): the state leaves memory after `idle_evict_s` and is reloaded on the next message.
//!
//! Module map:
//! - [`config`]: limits and paths.
//! - [`auth`]: who a request acts for ([`SessionAuthority`], service keys, 401/403 rules).
//! - [`hub`]: the per-user object and the rules every entry point goes through.
//! - [`conn`]: socket handles and the per-user registry of open sockets.
//! - [`ending`]: closing the sockets of sessions that end (revoke, logout, eviction, expiry).
//! - [`socket`]: the task owning one WebSocket (limits, ping/liveness).
//! - [`upgrade`]: the HTTP accept step shared by the protocols.
//! - [`seed`]: seed C's protocol and HTTP endpoints, wire-compatible.
//! - [`channels`]: channels with presence metas, offsets and recovery history.
//! - [`bus`]: the hub on several nodes (channel logs and user-directed actions through the
//!   engine's bus).
//! - [`presence`]: presence on several nodes (leased sets in the engine's presence store).
//! - [`grants`]: signed channel grants (HMAC-SHA256).
//! - [`v1`]: the v1 protocol at `/v1/realtime`.
//! - [`events`]: debounced user online/offline events and their sinks.
//! - [`webhook`]: the HMAC-signed webhook sink.
//! - [`sse`]: the SSE fallback (server → client).
//! - [`api`]: the server API under `/v1/realtime` (service key).
//! - [`listing`]: this node's connected users and channels, paged (service key).
//! - [`user_data`]: a user's connections and state for the devices view, export and erasure.
//!
//! Layering, bottom → top: `config`, `state`, [`auth`], [`grants`] → [`conn`] (a socket
//! holds its channels as a [`conn::JoinedChannel`]) → [`channels`] → [`events`], [`webhook`],
//! and what the hub's state holds of the other files: `session_end` (why sessions end),
//! `session_watch` (their deadlines), `cluster` (the bus's actions, signal queue and mirrors),
//! `presence_sets` (the presence sets and store) → [`hub`] → the files that extend it
//! ([`bus`], [`ending`], [`presence`]) → [`socket`], [`upgrade`] → the protocols ([`seed`],
//! [`v1`], [`sse`]) → [`api`], [`listing`], [`user_data`] → [`router`]. No module imports
//! one above it; the hub's entry points reach the extensions only through the methods those
//! add to [`Hub`].
//!
//! The capability never names a storage engine or the sessions capability: the server hands
//! it an [`ObjectKind`](sessiond_runtime::ObjectKind) for the state and a
//! [`SessionAuthority`] for tokens and revocation.

pub mod api;
pub mod auth;
pub mod bus;
pub mod channels;
mod cluster;
pub mod config;
pub mod conn;
pub mod ending;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
pub mod hub;
pub mod listing;
pub mod presence;
mod presence_sets;
pub mod seed;
mod session_end;
mod session_watch;
pub mod socket;
pub mod sse;
pub mod state;
pub mod upgrade;
pub mod user_data;
pub mod v1;
pub mod webhook;

use axum::Router;

pub use auth::{SecurityNote, SessionAuthority, SessionDeadlines, SessionUser};
pub use config::{EventsConfig, RealtimeConfig};
pub use events::{EventSink, SinkError, UserEvent};
pub use hub::{Hub, USER_KIND};
pub use session_end::LOGOUT_REASON;
pub use session_end::{EndReason, SessionEnded, ROTATED_CLOSE};
pub use state::{Presence, UserState};

/// Every realtime route, ready to merge into the server's router. Routes do their own
/// authentication (sockets take session tokens, service APIs take API keys), so the server
/// must not put its API-key guard in front of them.
pub fn router(hub: Hub) -> Router {
    // The service APIs are authenticated before their extractors run, so an anonymous
    // caller gets its 401 before any query or body is parsed (and learns nothing from a 400).
    let service_apis =
        api::router()
            .merge(listing::router())
            .route_layer(axum::middleware::from_fn_with_state(
                hub.clone(),
                api::require_service_layer,
            ));
    seed::router(&hub)
        .merge(v1::router())
        .merge(service_apis)
        .merge(sse::router())
        .with_state(hub)
}
