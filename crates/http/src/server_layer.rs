//! The server-wide request layer: access log and request id, request metrics, the JSON 405,
//! refused-request counting, the open-mode locality check and the body limit, in one service.
//!
//! Why one [`Step`] instead of a `from_fn` layer each: every layer applied with
//! `Router::layer` adds a boxed route around each route, and every `from_fn` layer boxes its
//! future and a clone of the inner service on top (see [`crate::step`]). Here a request pays
//! for one route wrapper and one future that is not boxed. The steps keep the
//! order the separate layers had, outermost first: the access log sees the final response,
//! metrics see the 405 after its rewrite, a refusal of the open-mode check is counted as
//! refused, and the body limit applies to every route (an inner router's own limit, set
//! closer to its handlers, still wins).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::header::ORIGIN;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::access::{request_id, AccessLog, ErrorMessage, REQUEST_ID};
use crate::access_line::{emit, AccessFields};
use crate::body::BodyLimit;
use crate::error::method_not_allowed_as_json;
use crate::forwarded::client_ip;
use crate::metrics::RequestMetrics;
use crate::origin::{narrow_allow_origin, OpenModePolicy};
use crate::step::Step;

/// Counts refused answers (401, 403) per class of route, for whoever summarizes them.
pub trait RefusalCounter: Send + Sync + 'static {
    /// Before the request runs: the class its refusal would be counted under, `None` when it
    /// is not counted at all.
    fn watch(&self, request: &Request) -> Option<&'static str>;
    /// The request of `class` was answered 401 or 403.
    fn refused(&self, class: &'static str, status: StatusCode);
}

/// What the server-wide layer does (see the module docs); `step::layer(stack)` for
/// `Router::layer`.
pub struct ServerStack {
    /// The access log settings.
    pub access: AccessLog,
    /// The request metrics' handle cache.
    pub metrics: RequestMetrics,
    /// Open development mode's locality rule; `None` when API keys are configured.
    pub open_mode: Option<OpenModePolicy>,
    /// Refused-request counting, when security events are on.
    pub refusals: Option<Arc<dyn RefusalCounter>>,
    /// The largest request body of every route (an inner router's own limit wins).
    pub max_body_bytes: usize,
}

/// What a request leaves for its response.
pub struct Seen {
    started: Instant,
    id: String,
    method: Method,
    route: Option<MatchedPath>,
    peer: Option<SocketAddr>,
    client: Option<std::net::IpAddr>,
    refusal_class: Option<&'static str>,
    origin: Option<HeaderValue>,
}

impl Step for ServerStack {
    type Seen = Seen;

    fn before(&self, request: &mut Request) -> (Seen, Option<Response>) {
        let started = Instant::now();
        let id = request_id(request.headers());
        let route = request.extensions().get::<MatchedPath>().cloned();
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let client = client_ip(
            &self.access.trusted_proxies,
            request.headers(),
            peer.map(|p| p.ip()),
        );
        let mut seen = Seen {
            started,
            id,
            method: request.method().clone(),
            route,
            peer,
            client,
            refusal_class: self.refusals.as_ref().and_then(|r| r.watch(request)),
            origin: None,
        };
        if let Some(policy) = &self.open_mode {
            if let Err(refusal) = policy.check(request) {
                return (seen, Some(refusal.into_response()));
            }
            seen.origin = request.headers().get(ORIGIN).cloned();
        }
        BodyLimit(self.max_body_bytes).before(request);
        (seen, None)
    }

    /// The response steps, innermost first.
    fn after(&self, mut seen: Seen, mut response: Response) -> Response {
        if let Some(origin) = seen.origin.take() {
            narrow_allow_origin(origin, &mut response);
        }
        let status = response.status();
        if let (Some(counter), Some(class)) = (&self.refusals, seen.refusal_class) {
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                counter.refused(class, status);
            }
        }
        let mut response = method_not_allowed_as_json(&seen.method, response);
        let route = seen.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let status = response.status().as_u16();
        let elapsed = seen.started.elapsed().as_secs_f64();
        self.metrics.observe(route, &seen.method, status, elapsed);
        if self.access.enabled || status == 401 || status == 403 {
            let error = response
                .extensions()
                .get::<ErrorMessage>()
                .map(|m| m.0.as_str());
            emit(&AccessFields {
                method: seen.method.as_str(),
                route,
                status,
                duration_ms: elapsed * 1000.0,
                bytes: response.body().size_hint().exact(),
                request_id: &seen.id,
                peer: seen.peer,
                client: seen.client,
                error,
            });
        }
        if let Ok(value) = HeaderValue::try_from(seen.id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        response
    }
}
