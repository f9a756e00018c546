//! The access log and request ids.
//!
//! One line per request (target `sessiond::access`, level info) is what an operator greps
//! first when "every page is a 401": it names the route template (never the raw path or query,
//! which can carry ids and tokens), the status, and for an error the message the client got —
//! a refusal's reason, never the credential (no header value is logged). The line can be
//! switched off (`log.access`), except for 401/403, which are always logged: a wrong key
//! somewhere must be visible without turning anything on.
//!
//! Every response carries `X-Request-Id`: the caller's own (a proxy's correlation id) when it
//! is a short printable token, otherwise a fresh random one, so log lines and client reports
//! can be matched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::forwarded::client_ip;
use crate::ids::random_id;

/// The request-id header, read from requests and set on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-supplied request id kept (longer ones are replaced).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The request's id (a request extension, for handlers that log).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The message of an error response, attached by [`crate::ApiError`] for the access log.
#[derive(Clone, Debug)]
pub struct ErrorMessage(pub String);

/// Settings of [`access_log`].
#[derive(Clone, Debug, Default)]
pub struct AccessLog {
    /// Log every request (false: only 401 and 403).
    pub enabled: bool,
    /// Peers whose `X-Forwarded-For` / `Forwarded` name the client.
    pub trusted_proxies: Arc<[IpNet]>,
}

/// A caller's id, if it is 1..=128 visible ASCII characters without spaces.
fn incoming_id(h: &HeaderMap) -> Option<String> {
    let id = h.get(&REQUEST_ID)?.to_str().ok()?;
    let ok = !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| id.to_owned())
}

/// Middleware (use with `from_fn_with_state`, outermost): request id in, request id out, one
/// log line.
pub async fn access_log(
    State(log): State<Arc<AccessLog>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = incoming_id(request.headers()).unwrap_or_else(random_id);
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = client_ip(
        &log.trusted_proxies,
        request.headers(),
        peer.map(|p| p.ip()),
    );
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    if !log.enabled && status != 401 && status != 403 {
        return response;
    }
    let error = response
        .extensions()
        .get::<ErrorMessage>()
        .map(|m| m.0.as_str());
    tracing::info!(
        target: "sessiond::access",
        method = %method,
        route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
        status,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        bytes = response.body().size_hint().exact(),
        request_id = %id,
        peer = peer.map(|p| p.to_string()),
        client = client.map(|ip| ip.to_string()),
        error,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_are_kept_only_when_short_and_printable() {
        let mut h = HeaderMap::new();
        assert_eq!(incoming_id(&h), None);
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123_x.y"));
        assert_eq!(incoming_id(&h).as_deref(), Some("abc-123_x.y"));
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(incoming_id(&h), None);
        let long = "a".repeat(MAX_REQUEST_ID_BYTES + 1);
        h.insert(REQUEST_ID, HeaderValue::from_str(&long).expect("value"));
        assert_eq!(incoming_id(&h), None);
    }
}
