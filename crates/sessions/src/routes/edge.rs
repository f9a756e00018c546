//! `GET /v1/sessions/forward-auth`: the account-session check for a proxy's subrequest (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`).
//!
//! The proxy copies the browser's headers onto the subrequest; the session id is the first
//! cookie of `sessions.cookies` in them. Answers: 200 with `X-Sessiond-User-Id`,
//! `X-Sessiond-Session-Id` and `X-Sessiond-Auth-Time` (ms) for the proxy to hand to the app;
//! 401 otherwise, whatever the reason (absent, unknown, ended, rotated away, open-route
//! session), with `WWW-Authenticate: Bearer error="insufficient_user_authentication",
//! max_age=<s>` when only the freshness demanded by `X-Sessiond-Max-Age` is missing; 400 for a
//! malformed `X-Sessiond-Max-Age` (the proxy's configuration is wrong). Unlike the anonymous
//! middleware's forward-auth, nothing here falls back to "allowed": a store failure is a 5xx,
//! which proxies turn into a denial. The rules themselves are
//! [`SessionService::edge_check`](crate::SessionService::edge_check), shared with the tower
//! layer.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sessiond_http::auth::cookie_value;
use sessiond_http::{ApiError, ApiResult};

use crate::routes::SessionsState;
use crate::service::{parse_max_age, EdgeVerdict, MAX_AGE_HEADER};

/// The verified user's id (answer header).
pub const USER_ID_HEADER: &str = "x-sessiond-user-id";
/// The verified session's id (answer header).
pub const SESSION_ID_HEADER: &str = "x-sessiond-session-id";
/// The session's `auth_time`, unix ms (answer header).
pub const AUTH_TIME_HEADER: &str = "x-sessiond-auth-time";

/// The route (mount under a full-key guard whatever `open_routes` says: the proxy holds a
/// key, and the answer vouches for an identity). It reads no body, so no media-type rule.
pub fn router() -> Router<SessionsState> {
    Router::new().route(
        "/v1/sessions/forward-auth",
        axum::routing::get(forward_auth),
    )
}

async fn forward_auth(State(s): State<SessionsState>, headers: HeaderMap) -> ApiResult<Response> {
    let max_age = parse_max_age(headers.get(MAX_AGE_HEADER).map(HeaderValue::as_bytes))?;
    let cookies = s.sessions.config().cookie_names();
    let id = cookie_value(&headers, &cookies);
    Ok(verdict_response(s.sessions.edge_check(id, max_age).await?))
}

/// The HTTP answer of a verdict: 200 with the identity headers, or a 401.
pub fn verdict_response(verdict: EdgeVerdict) -> Response {
    match verdict {
        EdgeVerdict::Allowed(record) => {
            let user = record.user_id.as_deref().unwrap_or_default();
            let (Ok(user), Ok(session)) = (
                HeaderValue::from_str(user),
                HeaderValue::from_str(&record.id),
            ) else {
                // A user id with control characters cannot travel in a header: not vouched for.
                tracing::warn!("edge check: the user id cannot be sent as a header; denied");
                return denied();
            };
            let mut response = StatusCode::OK.into_response();
            let h = response.headers_mut();
            h.insert(USER_ID_HEADER, user);
            h.insert(SESSION_ID_HEADER, session);
            h.insert(AUTH_TIME_HEADER, HeaderValue::from(record.auth_time));
            h.insert("cache-control", HeaderValue::from_static("no-store"));
            response
        }
        EdgeVerdict::Denied => denied(),
        EdgeVerdict::TooOld { max_age_s } => {
            let mut response = ApiError::unauthorized(format!(
                "the user authenticated more than {max_age_s} s ago: re-authenticate"
            ))
            .into_response();
            let challenge =
                format!("Bearer error=\"insufficient_user_authentication\", max_age={max_age_s}");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert("www-authenticate", value);
            }
            response
        }
    }
}

/// The one answer for every other case, so the reason never leaks.
fn denied() -> Response {
    ApiError::unauthorized("no live account session").into_response()
}
