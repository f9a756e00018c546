//! sessiond's session middleware as a tower [`Layer`](tower::Layer): one line gives every
//! request of a Rust web app (axum, or anything built on tower services) the session context
//! that nginx or Caddy get from sessiond's forward-auth, without a proxy in front.
//!
//! ```no_run
//! # fn demo(app: axum::Router, other_app: axum::Router, decider: sessiond_middleware::Decider) {
//! use sessiond_layer::SessionLayer;
//! // against a sessiond server (its `POST /v1/middleware/decide`, with an API key) …
//! let app = app.layer(SessionLayer::remote("http://127.0.0.1:7700", "api-key"));
//! // … or in this process, on an engine the app opened itself:
//! let other_app = other_app.layer(SessionLayer::in_process(decider));
//! # }
//! ```
//!
//! Per request the layer reads the request's metadata ([`request`]), asks its backend for a
//! decision, inserts the [`SessionContext`] into the request's extensions (an axum handler
//! takes `Extension<SessionContext>`), calls the app, and appends the decision's `Set-Cookie`
//! values to the app's response. When the backend fails (remote down, timeout, bad answer) the
//! request still reaches the app, with a fallback context (`is_fallback: true`, fresh ids, no
//! cookies), exactly as sessiond's own decision falls back when its engine fails. A client
//! over its decision rate gets a `429` JSON error, as from the decide API.
//!
//! [`AccountLayer`] is the other half: it lets a request through only with a live sessiond
//! *account* session (the edge check of `GET /v1/sessions/forward-auth`) and fails closed.
//!
//! Module map:
//! - [`account`]: [`AccountLayer`], the account-session check, in-process or remote.
//! - [`backend`]: the [`DecisionBackend`] trait the layer talks to, its in-process
//!   implementation on [`Decider`], and the fallback decision.
//! - [`remote`]: [`RemoteBackend`], the HTTP client of a remote sessiond.
//! - [`embedded`]: [`Embedded`], a decider and its object runtime on handles the app opened.
//! - [`request`]: from an `http::Request` to the decision input (cookie, client IP, …).
//! - [`service`]: [`SessionLayer`] and [`SessionService`].
//! - `wrap`: the tower `Service` plumbing both layers share.
//!
//! The crate never names a storage engine: the app opens one (see
//! `examples/axum_app.rs`) and hands its store handles to [`Embedded::start`].

pub mod account;
pub mod backend;
pub mod embedded;
pub mod remote;
pub mod request;
pub mod service;
mod wrap;

pub use account::{AccountLayer, AccountOutcome, AccountSession, RemoteAccounts};
pub use backend::{DecisionBackend, Outcome};
pub use embedded::Embedded;
pub use remote::RemoteBackend;
pub use request::ClientIp;
pub use service::{SessionLayer, SessionService};
pub use sessiond_middleware::{Decider, MiddlewareConfig, SessionContext};
