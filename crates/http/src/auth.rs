//! API-key authentication: `Authorization: Bearer <key>`.
//!
//! Several keys can be valid at once so operators can rotate: add the new key, move clients,
//! remove the old one. Only SHA-256 digests of the keys are kept, and a candidate is compared
//! by its digest, in constant time (`subtle`), against every configured key (full and scoped)
//! on every request: each comparison covers 32 bytes, so timing reveals neither which key
//! matched, nor how much of a guess was right, nor how long the keys are.
//!
//! Open development mode (every request acts as the service) is *not* "no key in this set":
//! the server decides it once at start-up (no credential of any kind configured and a
//! loopback listener) and says so with [`ApiKeys::open_mode`]; every capability asks
//! [`ApiKeys::is_open`] of the one value it was handed, so no capability can conclude "open"
//! from the subset of keys it happens to know.
//!
//! Two kinds of key: **full** keys reach every guarded route set; **scoped** keys carry a
//! [`KeyScope`] (path prefixes, optionally read-only) and are meant for one tenant of a
//! capability that names its resources by path (Durable Streams). A scoped key is refused
//! with 403 by [`FullKey`], the guard of every route set that does not understand
//! scopes; a capability that does (streams) calls [`ApiKeys::identify`] and enforces the
//! scope itself.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::error::ApiError;

/// Whether `prefix` covers `path` on `/` segment boundaries: `tenant-a` and `tenant-a/` both
/// mean the subtree `tenant-a/…`, never `tenant-abc/…` (a raw string prefix would hand one
/// tenant every tenant whose name extends its own).
pub fn covers_prefix(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    !prefix.is_empty()
        && path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// What a scoped key may touch: resources under one of `prefixes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyScope {
    /// Path prefixes, matched on segment boundaries ([`covers_prefix`]).
    pub prefixes: Vec<String>,
    /// Reads only (GET/HEAD).
    pub read_only: bool,
}

impl KeyScope {
    /// Whether `path` is under one of the prefixes.
    pub fn covers(&self, path: &str) -> bool {
        self.prefixes.iter().any(|p| covers_prefix(p, path))
    }
}

/// Which kind of key a request presented.
#[derive(Clone, Debug)]
pub enum KeyGrant {
    /// A full-access key (or open mode).
    Full,
    /// A scoped key.
    Scoped(Arc<KeyScope>),
}

/// The set of accepted keys.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<Vec<Digest>>,
    scoped: Arc<Vec<(Digest, Arc<KeyScope>)>>,
    open: bool,
}

/// SHA-256 of a key: fixed-size, so comparing two never depends on their lengths.
type Digest = [u8; 32];

fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

fn normalize(key: &str) -> Option<Digest> {
    let key = key.trim();
    (!key.is_empty()).then(|| digest(key.as_bytes()))
}

/// The first non-empty value of a cookie named in `names` (one pair of quotes around it
/// dropped), over every `Cookie` header line: the session id a browser presents to a socket
/// upgrade or, via a proxy, to the edge check (one list of names, `sessions.cookies`, for
/// both). The `cookie` crate splits the header: pairs without a name or `=` are skipped, and
/// names and values are taken as sent (no percent-decoding: session ids never need it).
pub fn cookie_value<'a>(headers: &'a HeaderMap, names: &[String]) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| names.iter().any(|n| n == c.name()))
        .filter_map(|c| c.value_raw())
        .map(|value| {
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
        .find(|value| !value.is_empty())
}

/// The token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The 401 for a request that presented no bearer credential. An `Authorization` header in
/// another form (a bare key, `Basic …`) is the usual misconfiguration of a proxy or client,
/// so that case says how the header must look instead of "missing".
pub fn missing_credential(headers: &HeaderMap, missing: &str) -> ApiError {
    match headers.get(AUTHORIZATION) {
        Some(_) if bearer(headers).is_none() => ApiError::unauthorized(
            "the Authorization header is not a bearer credential: send \
             `Authorization: Bearer <key>` (the word Bearer, one space, then the key)",
        ),
        _ => ApiError::unauthorized(missing),
    }
}

/// The message of [`missing_credential`] for API keys.
pub const MISSING_KEY: &str = "missing API key: send Authorization: Bearer <key>";

impl ApiKeys {
    /// Accept these full-access keys (closed: with none, nothing is accepted until
    /// [`open_mode`](Self::open_mode) says otherwise).
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .filter_map(|k| normalize(k.as_ref()))
            .collect();
        ApiKeys {
            keys: Arc::new(keys),
            scoped: Arc::default(),
            open: false,
        }
    }

    /// Also accept these scoped keys.
    pub fn with_scoped<I, K>(mut self, scoped: I) -> Self
    where
        I: IntoIterator<Item = (K, KeyScope)>,
        K: AsRef<str>,
    {
        let scoped = scoped
            .into_iter()
            .filter_map(|(k, scope)| Some((normalize(k.as_ref())?, Arc::new(scope))))
            .collect();
        self.scoped = Arc::new(scoped);
        self
    }

    /// Marks the server's open development mode, as decided at start-up. Ignored when any
    /// key is configured: a keyed server is never open.
    pub fn open_mode(mut self, open: bool) -> Self {
        self.open = open && self.keys.is_empty() && self.scoped.is_empty();
        self
    }

    /// True in open development mode (every request acts as the service).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether `candidate` equals one of the full-access keys, in constant time over all keys.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        matches!(self.identify(candidate), Some(KeyGrant::Full))
    }

    /// Which key `candidate` is, comparing it with every configured key (full and scoped) so
    /// the time taken does not depend on which one matched.
    pub fn identify(&self, candidate: &[u8]) -> Option<KeyGrant> {
        if candidate.is_empty() {
            return None;
        }
        let candidate = digest(candidate);
        let mut full = subtle::Choice::from(0u8);
        for key in self.keys.iter() {
            full |= key.ct_eq(&candidate);
        }
        // 1-based index of the matching scoped key, 0 for none.
        let mut scoped = 0u32;
        for (index, (key, _)) in self.scoped.iter().enumerate() {
            let position = u32::try_from(index + 1).unwrap_or(u32::MAX);
            scoped.conditional_assign(&position, key.ct_eq(&candidate));
        }
        if bool::from(full) {
            return Some(KeyGrant::Full);
        }
        let index = usize::try_from(scoped).ok()?.checked_sub(1)?;
        self.scoped
            .get(index)
            .map(|(_, scope)| KeyGrant::Scoped(scope.clone()))
    }

    /// Checks a request's `Authorization` header: which key it carries (`Full` in open mode).
    pub fn check(&self, headers: &HeaderMap) -> Result<KeyGrant, ApiError> {
        if self.is_open() {
            return Ok(KeyGrant::Full);
        }
        match bearer(headers) {
            Some(token) => self
                .identify(token.as_bytes())
                .ok_or_else(|| ApiError::unauthorized("invalid API key")),
            None => Err(missing_credential(headers, MISSING_KEY)),
        }
    }

    /// Like [`check`](Self::check), for route sets that need a full-access key: a scoped key
    /// is a 403.
    pub fn check_full(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.check(headers)? {
            KeyGrant::Full => Ok(()),
            KeyGrant::Scoped(_) => Err(ApiError::forbidden(
                "this API key is scoped to Durable Streams prefixes and cannot use this route",
            )),
        }
    }
}

/// A 401 with `WWW-Authenticate: Bearer`, or any other error as is. Every refusal is counted
/// (`sessiond_security_refused_total{what="request"}`; never per key or per client).
pub fn auth_failure(err: ApiError) -> Response {
    metrics::counter!("sessiond_security_refused_total", "what" => "request").increment(1);
    let challenge = err.status == axum::http::StatusCode::UNAUTHORIZED;
    let mut response = err.into_response();
    if challenge {
        response.headers_mut().insert(
            "www-authenticate",
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// A route set that wants a full-access key, as a middleware step
/// (`step::layer(FullKey(keys))`, with `route_layer`): requests without a valid full-access
/// key are refused; a scoped key is a 403.
///
/// CORS preflights (`OPTIONS`) pass without a key: browsers never attach credentials to a
/// preflight, so rejecting it would make every cross-origin call fail before the real,
/// authenticated request is even sent. The preflight reveals nothing and changes nothing; the
/// route's own handling (or the CORS layer) answers it.
#[derive(Clone)]
pub struct FullKey(pub ApiKeys);

impl crate::step::Step for FullKey {
    type Seen = ();

    fn before(&self, request: &mut Request) -> ((), Option<Response>) {
        if request.method() == axum::http::Method::OPTIONS {
            return ((), None);
        }
        (
            (),
            self.0.check_full(request.headers()).err().map(auth_failure),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_from_every_header_line() {
        let names = vec!["sid".to_string(), "session".to_string()];
        let mut headers = HeaderMap::new();
        assert_eq!(cookie_value(&headers, &names), None);
        for line in [
            "a=1; =nameless; junk; sid=",
            "  other=x ;session=\"tok-1\" ; sid=tok-2",
        ] {
            headers.append(
                axum::http::header::COOKIE,
                line.parse().expect("header value"),
            );
        }
        // The empty `sid=` is skipped; the first non-empty match wins, quotes dropped.
        assert_eq!(cookie_value(&headers, &names), Some("tok-1"));
        assert_eq!(cookie_value(&headers, &["sid".to_string()]), Some("tok-2"));
        assert_eq!(cookie_value(&headers, &["a".to_string()]), Some("1"));
        assert_eq!(cookie_value(&headers, &["junk".to_string()]), None);
        assert_eq!(cookie_value(&headers, &[]), None);
        // Not percent-decoded: the value is what the browser sent.
        let mut encoded = HeaderMap::new();
        encoded.insert(
            axum::http::header::COOKIE,
            "sid=a%20b".parse().expect("value"),
        );
        assert_eq!(cookie_value(&encoded, &names), Some("a%20b"));
    }
    use axum::body::Body;
    use axum::http::{Method, StatusCode};
    use axum::routing::any;
    use tower::ServiceExt;

    fn tenant_scope() -> KeyScope {
        KeyScope {
            prefixes: vec!["tenant-a/".into()],
            read_only: false,
        }
    }

    async fn status(method: Method, auth: Option<&str>) -> StatusCode {
        let keys = ApiKeys::new(["secret"]).with_scoped([("scoped", tenant_scope())]);
        let app = axum::Router::new()
            .route("/x", any(|| async { "ok" }))
            .route_layer(crate::step::layer(FullKey(keys)));
        let mut request = Request::builder().method(method).uri("/x");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let request = request.body(Body::empty()).expect("request");
        app.oneshot(request).await.expect("response").status()
    }

    #[tokio::test]
    async fn preflights_pass_without_a_key_and_other_methods_do_not() {
        assert_eq!(status(Method::OPTIONS, None).await, StatusCode::OK);
        assert_eq!(status(Method::GET, None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(Method::POST, Some("Bearer nope")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(Method::GET, Some("Bearer secret")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(Method::GET, Some("Bearer scoped")).await,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn identifies_full_and_scoped_keys() {
        let keys = ApiKeys::new(["full"]).with_scoped([
            ("scoped-a", tenant_scope()),
            (
                "scoped-b",
                KeyScope {
                    prefixes: vec!["b/".into()],
                    read_only: true,
                },
            ),
        ]);
        assert!(matches!(keys.identify(b"full"), Some(KeyGrant::Full)));
        match keys.identify(b"scoped-b") {
            Some(KeyGrant::Scoped(scope)) => {
                assert!(scope.read_only && scope.covers("b/x") && !scope.covers("a/x"))
            }
            other => panic!("expected scoped-b, got {other:?}"),
        }
        assert!(matches!(keys.identify(b"scoped-a"), Some(KeyGrant::Scoped(s)) if !s.read_only));
        assert!(keys.identify(b"scoped").is_none());
        assert!(!keys.accepts(b"scoped-a"), "a scoped key is not a full key");
        assert!(!ApiKeys::new(Vec::<String>::new())
            .with_scoped([("k", tenant_scope())])
            .open_mode(true)
            .is_open());
        assert!(
            !ApiKeys::new(Vec::<String>::new()).is_open(),
            "closed unless told"
        );
        assert!(ApiKeys::new(Vec::<String>::new()).open_mode(true).is_open());
    }

    #[test]
    fn accepts_any_configured_key_and_nothing_else() {
        let keys = ApiKeys::new(["old-key", "new-key"]);
        assert!(keys.accepts(b"old-key"));
        assert!(keys.accepts(b"new-key"));
        assert!(!keys.accepts(b"new-ke"));
        assert!(!keys.accepts(b""));
        assert!(!ApiKeys::new(Vec::<String>::new()).accepts(b""));
    }
}
