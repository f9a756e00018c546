//! The edge check: does this request carry a live account session, fresh enough?
//!
//! Why here and not in a route: the same rules answer a proxy's subrequest
//! (`GET /v1/sessions/forward-auth`) and the tower layer running in the app's own process, so
//! a session that passes one passes the other. The answer is deliberately poor — allowed, or
//! not (401), or not fresh enough (401 with the `max_age` to meet) — so a proxy cannot tell an
//! unknown id from an ended or rotated-away one. A pass is a use of the session: its idle
//! deadline slides exactly as a read slides it (written only when it moved by
//! `touch_fraction`), so a busy page costs no store write per request.

use axum::http::StatusCode;
use sessiond_http::{ApiError, ApiResult};
use sessiond_store::{now_ms, Millis, SessionOrigin, SessionRecord};

use super::SessionService;

/// The request header carrying the freshness a location demands (seconds since `auth_time`).
pub const MAX_AGE_HEADER: &str = "x-sessiond-max-age";

/// The verdict on one request.
#[derive(Clone, Debug, PartialEq)]
pub enum EdgeVerdict {
    /// A live session created with a service credential, owned by a user, fresh enough.
    Allowed(SessionRecord),
    /// No cookie, or one naming no live, keyed, owned session: 401.
    Denied,
    /// The session is fine but its user last proved who they are longer ago than the
    /// demanded `max_age` (seconds): 401 asking for a re-authentication (RFC 9470).
    TooOld {
        /// The demanded maximum age, echoed in `WWW-Authenticate`.
        max_age_s: u64,
    },
}

/// Parses `X-Sessiond-Max-Age`: absent → `None`; a decimal number of seconds (at most ten
/// digits) → `Some`; anything else is the proxy's configuration error (400).
pub fn parse_max_age(value: Option<&[u8]>) -> ApiResult<Option<u64>> {
    let Some(raw) = value else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw).unwrap_or("").trim();
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "X-Sessiond-Max-Age must be a whole number of seconds (0 to 9999999999)",
        ));
    }
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request("X-Sessiond-Max-Age is not a number"))
}

impl SessionService {
    /// Judges the session id a request presented (`None`: no cookie), demanding an
    /// `auth_time` at most `max_age_s` old when given. Store failures are errors (a proxy
    /// then denies: the check fails closed), never a pass.
    pub async fn edge_check(
        &self,
        session_id: Option<&str>,
        max_age_s: Option<u64>,
    ) -> ApiResult<EdgeVerdict> {
        let Some(id) = session_id.filter(|id| self.check_id("session id", id).is_ok()) else {
            return Ok(EdgeVerdict::Denied);
        };
        let record = match self.get(id).await {
            Ok(record) => record,
            Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(EdgeVerdict::Denied),
            Err(e) => return Err(e),
        };
        // A session created on an open route names whatever user its anonymous creator typed:
        // data, never identity. One without a user proves nobody.
        if record.origin != SessionOrigin::Service || record.user_id.is_none() {
            return Ok(EdgeVerdict::Denied);
        }
        if let Some(max_age_s) = max_age_s {
            let limit: Millis = crate::service::secs_to_ms(max_age_s);
            if now_ms().saturating_sub(record.auth_time) > limit {
                return Ok(EdgeVerdict::TooOld { max_age_s });
            }
        }
        Ok(EdgeVerdict::Allowed(record))
    }
}
