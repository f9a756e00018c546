//! The HTTP surfaces: `POST /v1/middleware/decide` (JSON in, JSON out) and
//! `/v1/middleware/forward-auth` (any method; for nginx `auth_request`, Caddy `forward_auth`,
//! Traefik `ForwardAuth`).
//!
//! Forward-auth reads the original request from the proxy's headers:
//! - client IP: the socket peer, unless the peer is a trusted proxy (`trusted_proxies`); then
//!   the right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries to its
//!   left were written by the client and prove nothing). An entry that is not an address
//!   (`unknown`, a typo, a port suffix some proxies add) is skipped on its own: one bad hop
//!   must not make the proxy's own address the client's for every request;
//! - URL: `X-Forwarded-Proto` + `X-Forwarded-Host` (else `Host`) + `X-Forwarded-Uri` (Traefik,
//!   Caddy) or `X-Original-URI` (nginx);
//! - method: `X-Forwarded-Method` or `X-Original-Method`, else the subrequest's own;
//! - `Cookie`, `User-Agent`, `Accept-Language`, `Accept-Encoding`, `Accept` as sent;
//! - optional `X-Forwarded-Tls-Cipher`, `X-Forwarded-Http-Protocol`, `X-Forwarded-Region`.
//!
//! It answers 200 with the context in `X-Session-*` headers and the cookies both as
//! `Set-Cookie` (Caddy, Traefik) and as numbered `X-Session-Cookie-<n>` headers, because
//! nginx's `$upstream_http_set_cookie` only sees the first `Set-Cookie` of a subrequest.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use sessiond_http::{ApiError, JsonBody};

use crate::context::{Decision, Refusal};
use crate::decide::Decider;
use crate::input::DecisionInput;

/// Most `X-Session-Cookie-<n>` headers forward-auth emits (layout A's first visit sets 8).
pub const MAX_COOKIE_HEADERS: usize = 8;

/// The `X-Session-Cookie-<n>` names, static so an answer does not format them.
const COOKIE_HEADERS: [&str; MAX_COOKIE_HEADERS] = [
    "x-session-cookie-1",
    "x-session-cookie-2",
    "x-session-cookie-3",
    "x-session-cookie-4",
    "x-session-cookie-5",
    "x-session-cookie-6",
    "x-session-cookie-7",
    "x-session-cookie-8",
];
/// Headers of an answer besides the cookies (sized once instead of growing the map).
const CONTEXT_HEADERS: usize = 8;

/// The capability's router (mount at the root).
pub fn router(decider: Decider) -> Router {
    Router::new()
        .route("/v1/middleware/decide", post(decide))
        .route("/v1/middleware/forward-auth", any(forward_auth))
        .with_state(decider)
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::RateLimited => ApiError::limit(refusal.to_string()),
    }
}

async fn decide(
    State(decider): State<Decider>,
    JsonBody(mut input): JsonBody<DecisionInput>,
) -> Result<Json<Decision>, ApiError> {
    if let Err(field) = input.check(decider.config().limits.max_field_bytes) {
        return Err(ApiError::bad_request(format!(
            "{field} is longer than {} bytes",
            decider.config().limits.max_field_bytes
        )));
    }
    decider.decide(&input).await.map(Json).map_err(refused)
}

async fn forward_auth(State(decider): State<Decider>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut input = forwarded_input(decider.config(), request.headers(), peer, request.method());
    input.truncate(decider.config().limits.max_field_bytes);
    match decider.decide(&input).await {
        Ok(decision) => context_headers(&decision),
        Err(refusal) => refused(refusal).into_response(),
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The client IP: the peer, or the right-most untrusted `X-Forwarded-For` hop when the peer
/// is a trusted proxy (the server's one rule, [`sessiond_http::forwarded::client_ip`]).
pub fn client_ip(
    config: &crate::MiddlewareConfig,
    h: &HeaderMap,
    peer: Option<IpAddr>,
) -> Option<IpAddr> {
    sessiond_http::forwarded::client_ip(&config.trusted_proxies, h, peer)
}

/// The decision input of a forward-auth subrequest (see the module docs for which header
/// means what); `method` is the subrequest's own, used when no forwarded method is given.
pub fn forwarded_input(
    config: &crate::MiddlewareConfig,
    h: &HeaderMap,
    peer: Option<IpAddr>,
    method: &axum::http::Method,
) -> DecisionInput {
    let uri = header(h, "x-forwarded-uri").or_else(|| header(h, "x-original-uri"));
    let host = header(h, "x-forwarded-host").or_else(|| header(h, "host"));
    let proto = header(h, "x-forwarded-proto").unwrap_or_else(|| "http".into());
    let url = match (host, uri) {
        (Some(host), Some(uri)) => Some(format!("{proto}://{host}{uri}")),
        (None, Some(uri)) => Some(uri),
        _ => None,
    };
    DecisionInput {
        cookie: header(h, "cookie"),
        ip: client_ip(config, h, peer).map(|ip| ip.to_string()),
        user_agent: header(h, "user-agent"),
        accept_language: header(h, "accept-language"),
        accept_encoding: header(h, "accept-encoding"),
        accept: header(h, "accept"),
        tls_cipher: header(h, "x-forwarded-tls-cipher"),
        http_protocol: header(h, "x-forwarded-http-protocol"),
        region: header(h, "x-forwarded-region"),
        url,
        method: header(h, "x-forwarded-method")
            .or_else(|| header(h, "x-original-method"))
            .or_else(|| Some(method.to_string())),
    }
}

/// 200 with the context as `X-Session-*` headers and the cookies.
fn context_headers(decision: &Decision) -> Response {
    let s = &decision.session;
    // Never empty: proxies drop empty headers, and "absent" should not mean "nothing new".
    let new = match (s.is_new_client, s.is_new_session) {
        (true, true) => "client,session",
        (true, false) => "client",
        (false, true) => "session",
        (false, false) => "none",
    };
    let mut out = HeaderMap::with_capacity(
        CONTEXT_HEADERS + 2 * decision.set_cookies.len().min(MAX_COOKIE_HEADERS),
    );
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-session-cid", &s.cid);
    put("x-session-sid", &s.sid);
    put("x-session-eid", &s.eid);
    put("x-session-new", new);
    put("x-session-fallback", if s.is_fallback { "1" } else { "0" });
    put("x-session-client-time", &s.client_time.to_string());
    put("x-session-session-time", &s.session_time.to_string());
    if let Some(fp) = &s.fp_id {
        put("x-session-fpid", fp);
    }
    for (i, cookie) in decision.set_cookies.iter().enumerate() {
        let Ok(v) = HeaderValue::from_str(cookie) else {
            continue;
        };
        out.append(axum::http::header::SET_COOKIE, v.clone());
        if let Some(name) = COOKIE_HEADERS.get(i) {
            out.insert(HeaderName::from_static(name), v);
        }
    }
    (StatusCode::OK, out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_trusts_forwarded_for_only_from_trusted_peers() {
        let config = crate::MiddlewareConfig::default();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 127.0.0.1"),
        );
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        let stranger: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(
            client_ip(&config, &h, Some(loopback)),
            "203.0.113.9".parse().ok()
        );
        assert_eq!(client_ip(&config, &h, Some(stranger)), Some(stranger));
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(&config, &h, Some(loopback)), Some(loopback));
    }

    #[test]
    fn one_bad_hop_is_skipped_alone() {
        let config = crate::MiddlewareConfig::default();
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        let mut h = HeaderMap::new();
        for (xff, want) in [
            ("203.0.113.9, unknown", "203.0.113.9"),
            ("unknown, 203.0.113.9", "203.0.113.9"),
            ("203.0.113.9, not an ip, 127.0.0.1", "203.0.113.9"),
            ("203.0.113.9:4711", "203.0.113.9"),
            ("[2001:db8::7]:443, ", "2001:db8::7"),
        ] {
            h.insert("x-forwarded-for", HeaderValue::from_static(xff));
            assert_eq!(
                client_ip(&config, &h, Some(loopback)),
                want.parse().ok(),
                "{xff}"
            );
        }
    }
}
