//! HTTP routes of the capability: the native API and the two compat surfaces.
//!
//! - [`native`]: `/v1/...`, sessiond's own API.
//! - [`edge`]: `GET /v1/sessions/forward-auth`, the account-session check of proxies.
//! - [`session_state`]: seed B, the Session State Worker's routes (plain-text bodies).
//! - [`state`]: seed E, SessionStore + CalendarCache routes.
//!
//! The shared header conventions live here: `Sessiond-Durability: unconfirmed` opts a write out
//! of the durable acknowledgement, `If-Match: "<version>"` makes a change conditional.

pub mod edge;
pub mod native;
pub mod session_state;
pub mod state;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use sessiond_http::{ApiError, ApiKeys, ApiResult};
use sessiond_store::{Durability, SessionOrigin};

use crate::cache::{CacheService, Hit};
use crate::service::SessionService;

/// What every handler of this capability needs: one `Arc`, so the per-request state clone
/// is a single reference-count increment.
#[derive(Clone)]
pub struct SessionsState(Arc<SessionsParts>);

/// The services behind [`SessionsState`].
pub struct SessionsParts {
    /// Sessions.
    pub sessions: SessionService,
    /// Cache.
    pub cache: CacheService,
}

impl SessionsState {
    /// Bundles the services.
    pub fn new(sessions: SessionService, cache: CacheService) -> Self {
        SessionsState(Arc::new(SessionsParts { sessions, cache }))
    }
}

impl std::ops::Deref for SessionsState {
    type Target = SessionsParts;
    fn deref(&self) -> &SessionsParts {
        &self.0
    }
}

/// Whether a request was made with a service credential: a request extension the **server**
/// sets (the capability knows neither keys nor `open_routes`), read by every route that
/// creates a session to record its [`SessionOrigin`]. A request without it counts as an
/// open-route request: forgetting to mark a route fails closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestOrigin(pub SessionOrigin);

/// The origin of a request as marked by the server (open route when unmarked).
pub fn request_origin(marked: Option<Extension<RequestOrigin>>) -> SessionOrigin {
    marked.map_or(SessionOrigin::OpenRoute, |Extension(RequestOrigin(o))| o)
}

/// What the origin mark (its middleware step) needs: the full-access keys, and whether the server is in open
/// development mode (then every request is the developer's own, i.e. service).
#[derive(Clone)]
pub struct OriginCheck {
    /// Full-access keys.
    pub keys: ApiKeys,
    /// Open development mode.
    pub open_mode: bool,
}

/// Marks each request with its [`RequestOrigin`] (a middleware step:
/// `step::layer(check)`): service when it carries a full-access key in `Authorization` (or in
/// open development mode), else open route. It refuses nothing; the route set's own guard (if
/// any) does that.
impl sessiond_http::step::Step for OriginCheck {
    type Seen = ();

    fn before(&self, req: &mut Request) -> ((), Option<Response>) {
        let service = self.open_mode
            || sessiond_http::auth::bearer(req.headers())
                .is_some_and(|token| self.keys.accepts(token.as_bytes()));
        let origin = match service {
            true => SessionOrigin::Service,
            false => SessionOrigin::OpenRoute,
        };
        req.extensions_mut().insert(RequestOrigin(origin));
        ((), None)
    }
}

/// Header that opts a write into unconfirmed acknowledgement.
pub const DURABILITY_HEADER: &str = "sessiond-durability";

/// Reads the durability opt-in (`confirmed` is the default; anything else is a 400).
pub fn durability(headers: &HeaderMap) -> ApiResult<Durability> {
    match headers
        .get(DURABILITY_HEADER)
        .map(|v| v.to_str().map(str::trim))
    {
        None => Ok(Durability::Confirmed),
        Some(Ok(v)) if v.eq_ignore_ascii_case("confirmed") => Ok(Durability::Confirmed),
        Some(Ok(v)) if v.eq_ignore_ascii_case("unconfirmed") => Ok(Durability::Unconfirmed),
        Some(_) => Err(ApiError::bad_request(format!(
            "{DURABILITY_HEADER} must be `confirmed` or `unconfirmed`"
        ))),
    }
}

/// `If-Match` and the durability of a conditional write. A malformed `Sessiond-Durability` is
/// a 400 even when `If-Match` would not match: a request that is bad without its
/// preconditions never gets their 412 (RFC 9110 §13.2.1; found by the schemathesis run).
pub fn write_conditions(headers: &HeaderMap) -> ApiResult<(Option<u64>, Durability)> {
    let durability = durability(headers)?;
    Ok((if_match(headers)?, durability))
}

/// Reads `If-Match` with the strong comparison of RFC 9110 §13.1.1: absent or `*` → None;
/// `"7"` → Some(7). A weak tag (`W/"7"`) or a quoted tag that is no version never matches
/// (412); text that is not an entity-tag list at all (`abc`, `7` without quotes) is a 400.
/// A list may name one version: the service compares against a single expected version.
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::bad_request(
            "If-Match must be `*` or a list of quoted entity tags, e.g. If-Match: \"2\"",
        )
    };
    let text = value.to_str().map_err(|_| malformed())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let mut versions = Vec::new();
    for tag in text.split(',').map(str::trim) {
        let (weak, quoted) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let opaque = quoted
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|t| !t.contains('"'))
            .ok_or_else(malformed)?;
        // Strong comparison is character by character: `"01"` or `"+1"` is not the ETag `"1"`.
        match opaque.parse::<u64>() {
            Ok(version) if !weak && opaque == version.to_string() => versions.push(version),
            _ => {}
        }
    }
    versions.sort_unstable();
    versions.dedup();
    match versions.as_slice() {
        [] => Err(ApiError::precondition_failed(format!(
            "If-Match `{text}` matches no session version (weak tags never match: send the \
             ETag as received, e.g. \"2\")"
        ))),
        [version] => Ok(Some(*version)),
        _ => Err(ApiError::bad_request(
            "If-Match may name one session version",
        )),
    }
}

/// A cache answer with `X-Cache: HIT|MISS` and `X-Cache-Age` (ms), the header contract of the
/// CalendarCache seed. The body of a hit is the stored JSON, verbatim.
pub fn cache_response(hit: Option<Hit>, miss: impl FnOnce() -> Response) -> Response {
    match hit {
        Some(hit) => {
            let mut r = ([("content-type", "application/json")], hit.value).into_response();
            let h = r.headers_mut();
            h.insert("x-cache", axum::http::HeaderValue::from_static("HIT"));
            h.insert("x-cache-age", axum::http::HeaderValue::from(hit.age_ms));
            r
        }
        None => {
            let mut r = miss();
            r.headers_mut()
                .insert("x-cache", axum::http::HeaderValue::from_static("MISS"));
            r
        }
    }
}

/// Turns an `ApiError` into a plain-text response with the same status (for compat routes whose
/// clients read text).
pub fn plain_error(err: ApiError) -> Response {
    (
        err.status,
        [("content-type", "text/plain;charset=UTF-8")],
        err.message,
    )
        .into_response()
}
