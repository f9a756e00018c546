//! [`SessionLayer`] and the [`SessionService`] it wraps around an app (the tower plumbing is
//! [`crate::wrap`]'s; the 429 it answers itself is in sessiond's error shape).

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use sessiond_middleware::{Decider, Refusal, SessionContext};
use tower::Layer;

use crate::backend::{fallback, DecisionBackend, Outcome};
use crate::remote::RemoteBackend;
use crate::request::{decision_input, ClientIp};
use crate::wrap::{json_error, Around, Judging, Verdict, Wrapped};

/// Adds a session context to every request and the session cookies to every response.
#[derive(Clone)]
pub struct SessionLayer {
    backend: Arc<dyn DecisionBackend>,
    client_ip: Arc<ClientIp>,
}

impl SessionLayer {
    /// Decisions from the sessiond at `base_url`, with `api_key` (see [`RemoteBackend::new`]).
    pub fn remote(base_url: &str, api_key: &str) -> Self {
        Self::with_backend(RemoteBackend::new(base_url, api_key))
    }

    /// Decisions made in this process by `decider` (see [`crate::Embedded`]).
    pub fn in_process(decider: Decider) -> Self {
        Self::with_backend(decider)
    }

    /// Decisions from any backend (e.g. a tuned [`RemoteBackend`]).
    pub fn with_backend(backend: impl DecisionBackend) -> Self {
        SessionLayer {
            backend: Arc::new(backend),
            client_ip: Arc::new(ClientIp::Peer),
        }
    }

    /// Takes the client IP from the right-most entry of `header`, written by the proxy in
    /// front of the app (default: the TCP peer).
    pub fn client_ip_header(mut self, header: HeaderName) -> Self {
        self.client_ip = Arc::new(ClientIp::Header(header));
        self
    }
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("client_ip", &self.client_ip)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Wrapped::new(self.clone(), inner)
    }
}

/// The service [`SessionLayer`] produces.
pub type SessionService<S> = Wrapped<SessionLayer, S>;

impl Around for SessionLayer {
    type Found = SessionContext;
    type After = Vec<String>;

    fn judge<B>(&self, request: &Request<B>) -> Judging<SessionContext, Vec<String>> {
        let backend = self.backend.clone();
        let input = decision_input(request, &self.client_ip, backend.max_field_bytes());
        Box::pin(async move {
            let decision = match backend.decide(input).await {
                Outcome::Decided(decision) => *decision,
                Outcome::Refused(refusal) => return Verdict::Answer(refused(refusal)),
                Outcome::Unavailable(reason) => {
                    tracing::warn!(%reason, "session decision falls back");
                    fallback()
                }
            };
            Verdict::Pass(decision.session, decision.set_cookies)
        })
    }

    fn after(set_cookies: Vec<String>, headers: &mut HeaderMap) {
        for cookie in &set_cookies {
            match HeaderValue::from_str(cookie) {
                Ok(value) => {
                    headers.append(SET_COOKIE, value);
                }
                Err(_) => tracing::warn!("session cookie is not a valid header value"),
            }
        }
    }
}

/// The 429 of a rate-refused client, in sessiond's error shape.
fn refused(refusal: Refusal) -> Response<Bytes> {
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "limit_reached",
        &refusal.to_string(),
    );
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
