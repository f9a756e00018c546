//! [`SessionLayer`] and the [`SessionService`] it wraps around an app.
//!
//! The service is generic over request and response bodies, so it fits axum routers and any
//! other tower service whose response body can be built from bytes (for the 429 it answers
//! itself). It clones the inner service per call and uses the clone that `poll_ready`
//! readied (tower's usual rule for services that call their inner service in a future).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use sessiond_middleware::{Decider, Refusal};
use tower::{Layer, Service};

use crate::backend::{fallback, DecisionBackend, Outcome};
use crate::remote::RemoteBackend;
use crate::request::{decision_input, ClientIp};

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
        SessionService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`SessionLayer`] produces.
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    layer: SessionLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let backend = self.layer.backend.clone();
        let input = decision_input(&request, &self.layer.client_ip, backend.max_field_bytes());
        // The readied service handles this call; a fresh clone waits for the next poll_ready.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            let decision = match backend.decide(input).await {
                Outcome::Decided(decision) => *decision,
                Outcome::Refused(refusal) => return Ok(refused(refusal)),
                Outcome::Unavailable(reason) => {
                    tracing::warn!(%reason, "session decision falls back");
                    fallback()
                }
            };
            request.extensions_mut().insert(decision.session);
            let mut response = inner.call(request).await?;
            let headers = response.headers_mut();
            for cookie in &decision.set_cookies {
                match HeaderValue::from_str(cookie) {
                    Ok(value) => {
                        headers.append(SET_COOKIE, value);
                    }
                    Err(_) => tracing::warn!("session cookie is not a valid header value"),
                }
            }
            Ok(response)
        })
    }
}

/// The 429 of a rate-refused client, in sessiond's error shape.
fn refused<B: From<Bytes>>(refusal: Refusal) -> Response<B> {
    let body = serde_json::json!({
        "error": { "code": "limit_reached", "message": refusal.to_string() }
    });
    let mut response = Response::new(B::from(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
