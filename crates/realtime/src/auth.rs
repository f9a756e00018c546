//! Who is connecting: the user a request acts for, decided before any WebSocket upgrade.
//!
//! Seed C trusted the `userId` in the query, so anyone could read or disconnect anyone. Here a
//! request carries a credential — `Authorization: Bearer`, a `?token=` query parameter (what
//! a browser WebSocket can send) or a session cookie — and it is either a service API key
//! (acts for any user, named by `userId`; accepted only from `Authorization`, since query
//! strings end up in logs) or a session token that the server's session authority maps to
//! exactly one user. A `userId` naming someone else is a 403. A cookie is sent by the browser
//! on its own, also for a socket another site's page opens, so a cookie credential counts
//! only with a same-origin (or `realtime.allowed_origins`) `Origin` (`sessiond_http::origin`).
//!
//! The capability does not know how sessions are stored: it asks a [`SessionAuthority`], which
//! the server implements over the sessions capability.
//!
//! A socket that presents no session token may still be identified by the session
//! middleware's signed cookie (the authority verifies it with the middleware's own codec). That
//! cookie names a *browser*, not an account, so such a socket belongs to the anonymous user
//! `client:<cID>`: per-browser multi-tab sync and presence for sites without accounts. The
//! `client:` prefix is reserved for these users — a `/v1/sessions` session whose user id
//! starts with it is refused — so a browser cookie can never stand for a real user.

use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, StatusCode};
use sessiond_http::auth::cookie_value;
use sessiond_http::origin::check_cookie_origin;
use sessiond_http::{ApiError, ApiKeys};

/// A user proven by a session token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionUser {
    /// The session's owner.
    pub user_id: String,
    /// The `/v1/sessions` id that proved it (sockets close when it is revoked); `None` for a
    /// browser identified by the middleware's cookie.
    pub session_id: Option<String>,
    /// The session's deadlines when it was checked (its sockets close when it ends).
    pub deadlines: Option<SessionDeadlines>,
    /// The session was created on an open route without a service credential: it names a
    /// user but proves nothing, so it is refused (403).
    pub open_route: bool,
}

/// A session's two deadlines (unix ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionDeadlines {
    /// The sliding idle deadline.
    pub idle: sessiond_store::Millis,
    /// The fixed absolute deadline.
    pub absolute: sessiond_store::Millis,
    /// Length of the idle window (how far a use slides the idle deadline).
    pub idle_window: sessiond_store::Millis,
}

/// User ids of browsers identified by the middleware's cookie: `client:<cID>`.
pub const CLIENT_USER_PREFIX: &str = "client:";

/// The narrow view of the session service the hub needs.
#[async_trait::async_trait]
pub trait SessionAuthority: Send + Sync + 'static {
    /// The user a session token belongs to; `Ok(None)` when the token is unknown, expired or
    /// names no user. `Err` only when the answer cannot be known now (storage down): the
    /// sessions capability's own error, answered as it is (`sessiond_http::error`'s mapping).
    async fn authenticate(&self, token: &str) -> Result<Option<SessionUser>, ApiError>;
    /// Revokes every session of `user_id` (logout on all devices); returns how many.
    async fn revoke_user(&self, user_id: &str) -> Result<usize, ApiError>;
    /// The deadlines of a live session, **without** sliding them (a watcher must not keep a
    /// session alive); `Ok(None)` when it is gone or expired.
    async fn session_deadlines(
        &self,
        session_id: &str,
    ) -> Result<Option<SessionDeadlines>, ApiError>;
    /// Extends the idle deadline of a live session (the client answered `session_expiring`)
    /// and returns its new deadlines; `Ok(None)` when it is gone or expired.
    async fn extend_session(&self, session_id: &str) -> Result<Option<SessionDeadlines>, ApiError>;
    /// The client id (cID) the session middleware's signed cookie in `cookie_header` proves,
    /// or `None` (no middleware, no cookie, or not validly signed).
    async fn middleware_client(&self, _cookie_header: &str) -> Option<String> {
        None
    }
    /// Records a security event (`socket.refused`, `socket.closed`, `grant.issued`,
    /// `grant.revoked`; see docs/sessions.md). Must not block; the default records nothing.
    fn security_event(&self, _note: SecurityNote) {}
}

/// A security event the hub observed, for [`SessionAuthority::security_event`].
#[derive(Clone, Debug, PartialEq)]
pub struct SecurityNote {
    /// Event type.
    pub kind: &'static str,
    /// Whose (none for a refused socket: the global stream only, no user).
    pub user_id: Option<String>,
    /// The session concerned, if any.
    pub session_id: Option<String>,
    /// Further fields.
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Whom a request acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A service API key (or open development mode): may act for any user.
    Service,
    /// A user proven by a session.
    User(SessionUser),
}

/// Where a request's credential came from: a cookie is sent by the browser on its own, and
/// a query string ends up in logs, so each source proves different things.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `Authorization: Bearer` (the only place a service key is accepted).
    Header,
    /// `?token=` (what a browser WebSocket or EventSource can send).
    Query,
    /// A session cookie (needs the same-origin check).
    Cookie,
}

/// The credential of a request, in order of preference, and where it came from.
fn credential<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
    cookies: &[String],
) -> Option<(&'a str, Source)> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    bearer
        .map(|t| (t, Source::Header))
        .or(query_token
            .filter(|t| !t.is_empty())
            .map(|t| (t, Source::Query)))
        .or_else(|| cookie_value(headers, cookies).map(|t| (t, Source::Cookie)))
}

/// The whole `Cookie` header of a request (several header lines joined as one).
fn cookie_header(headers: &HeaderMap) -> String {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which credentials a route takes besides tokens and service keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept<'a> {
    /// A plain HTTP API: no credential in open development mode means service.
    Http,
    /// A socket (or SSE) route: always an authenticated user; `middleware_cookie` lets the
    /// session middleware's signed cookie identify a browser when no token is presented.
    Socket {
        /// Accept the middleware's cookie (`realtime.middleware_clients`).
        middleware_cookie: bool,
        /// Origins besides the request's own host from which a cookie may authenticate
        /// (`realtime.allowed_origins`).
        allowed_origins: &'a [String],
    },
}

/// The same-origin rule for a cookie credential (cross-site WebSocket hijacking, CSRF).
fn cookie_origin(headers: &HeaderMap, accept: Accept<'_>) -> Result<(), ApiError> {
    let allowed = match accept {
        Accept::Socket {
            allowed_origins, ..
        } => allowed_origins,
        Accept::Http => &[],
    };
    check_cookie_origin(headers, allowed)
}

/// Identifies the caller of a request.
///
/// - A service key in `Authorization` → [`Caller::Service`] (never from `?token=` or a
///   cookie: query strings end up in logs).
/// - A cookie credential (session or middleware cookie) from a page whose `Origin` is
///   neither the request's host nor in `realtime.allowed_origins` → 403.
/// - No credential in the server's open development mode (decided once at start-up and
///   carried by `keys`; a tenant stream key alone does not make it) → service only
///   for [`Accept::Http`] (plain HTTP APIs follow the server's open mode; sockets never do: a
///   socket always belongs to an authenticated user).
/// - A valid session token → [`Caller::User`] (403 if its user id is in the reserved
///   `client:` namespace).
/// - No credential, on a socket route that accepts it, and a validly signed middleware cookie
///   → [`Caller::User`] `client:<cID>` without a session.
/// - Anything else → 401.
pub async fn identify(
    keys: &ApiKeys,
    authority: &dyn SessionAuthority,
    headers: &HeaderMap,
    query_token: Option<&str>,
    cookies: &[String],
    accept: Accept<'_>,
) -> Result<Caller, ApiError> {
    let socket = matches!(accept, Accept::Socket { .. });
    let result = identify_caller(keys, authority, headers, query_token, cookies, accept).await;
    match &result {
        Err(e) if socket && e.status.is_client_error() => refused(authority, e.status.as_u16()),
        _ => {}
    }
    result
}

/// A socket refused before it opened: counted, and noted for the global security stream
/// (rate-limited by the recorder).
pub(crate) fn refused(authority: &dyn SessionAuthority, status: u16) {
    metrics::counter!("sessiond_security_refused_total", "what" => "socket").increment(1);
    let mut details = serde_json::Map::new();
    details.insert("status".into(), status.into());
    authority.security_event(SecurityNote {
        kind: "socket.refused",
        user_id: None,
        session_id: None,
        details,
    });
}

async fn identify_caller(
    keys: &ApiKeys,
    authority: &dyn SessionAuthority,
    headers: &HeaderMap,
    query_token: Option<&str>,
    cookies: &[String],
    accept: Accept<'_>,
) -> Result<Caller, ApiError> {
    let Some((token, source)) = credential(headers, query_token, cookies) else {
        match accept {
            Accept::Http if keys.is_open() => return Ok(Caller::Service),
            Accept::Socket {
                middleware_cookie: true,
                ..
            } => {
                let header = cookie_header(headers);
                if let Some(cid) = authority.middleware_client(&header).await {
                    cookie_origin(headers, accept)?;
                    return Ok(Caller::User(SessionUser {
                        user_id: format!("{CLIENT_USER_PREFIX}{cid}"),
                        ..SessionUser::default()
                    }));
                }
            }
            _ => {}
        }
        return Err(sessiond_http::auth::missing_credential(
            headers,
            "missing credentials: send a session token (Authorization: Bearer, ?token= or the \
             session cookie), the session middleware's signed cookie, or a service API key",
        ));
    };
    if source == Source::Header && keys.accepts(token.as_bytes()) {
        return Ok(Caller::Service);
    }
    if source == Source::Cookie {
        cookie_origin(headers, accept)?;
    }
    match authority.authenticate(token).await {
        Ok(Some(user)) if user.user_id.starts_with(CLIENT_USER_PREFIX) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "user ids starting with `client:` are reserved for browsers identified by the \
             session middleware's cookie",
        )),
        Ok(Some(user)) if user.open_route => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this session was created on an open route without a service credential, so it \
             does not prove who its user is; create sessions that authenticate users with a \
             service API key",
        )),
        Ok(Some(user)) => Ok(Caller::User(user)),
        Ok(None) => Err(ApiError::unauthorized("invalid or expired session token")),
        Err(e) => Err(e),
    }
}

/// The user a caller acts for, given the `userId` it asked for: a user may only act for
/// themselves (403 otherwise); a service must name the user (400 otherwise).
pub fn acting_user(caller: &Caller, requested: Option<&str>) -> Result<String, ApiError> {
    match (caller, requested.filter(|u| !u.is_empty())) {
        (Caller::User(user), None) => Ok(user.user_id.clone()),
        (Caller::User(user), Some(asked)) if asked == user.user_id => Ok(user.user_id.clone()),
        (Caller::User(_), Some(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "userId does not match the authenticated user",
        )),
        (Caller::Service, Some(asked)) => Ok(asked.to_string()),
        (Caller::Service, None) => Err(ApiError::bad_request("Missing userId")),
    }
}

/// A service caller, or 401/403.
pub fn require_service(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Service => Ok(()),
        Caller::User(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API needs a service API key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_order_of_preference() {
        let cookies = vec!["sid".to_string()];
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; sid=cookie-token".parse().expect("header"));
        assert_eq!(
            credential(&headers, None, &cookies),
            Some(("cookie-token", Source::Cookie))
        );
        assert_eq!(
            credential(&headers, Some("q"), &cookies),
            Some(("q", Source::Query))
        );
        headers.insert(AUTHORIZATION, "Bearer hdr".parse().expect("header"));
        assert_eq!(
            credential(&headers, Some("q"), &cookies),
            Some(("hdr", Source::Header))
        );
        assert_eq!(credential(&HeaderMap::new(), Some(""), &cookies), None);
    }

    #[test]
    fn users_act_only_for_themselves() {
        let user = Caller::User(SessionUser {
            user_id: "alice".into(),
            session_id: Some("s".into()),
            ..SessionUser::default()
        });
        assert_eq!(acting_user(&user, None).expect("self"), "alice");
        assert_eq!(acting_user(&user, Some("alice")).expect("self"), "alice");
        assert_eq!(
            acting_user(&user, Some("bob")).expect_err("other").status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            acting_user(&Caller::Service, Some("bob")).expect("svc"),
            "bob"
        );
        assert_eq!(
            acting_user(&Caller::Service, None)
                .expect_err("none")
                .status,
            StatusCode::BAD_REQUEST
        );
    }
}
