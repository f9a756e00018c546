//! Who may do what on which stream: full API keys, tenant keys scoped to path prefixes,
//! HS256 read tokens for GET/HEAD, and open mode.
//!
//! [`StreamGuard`]'s middleware step is the one decision point, a `route_layer` that runs on
//! the request's headers before the handler's body extractor reads anything: it finds out *who*
//! is calling, validates the stream name from the path and decides whether that caller may
//! touch that stream (and a fork's source) — so an out-of-scope caller gets its 403 without
//! the server buffering up to `max_append_bytes` of body, and learns nothing about another
//! tenant's streams (403 whether or not the stream exists). The guard is installed in every
//! mode: open mode and `open_routes` only change what an anonymous caller is.
//!
//! Server-owned streams (`__sessiond/`, `__system/` and the configured metrics, presence and
//! middleware event streams) carry other users' data: they are readable only with a full
//! service key and writable over HTTP by nobody; the server appends to them internally.
//!
//! Read tokens exist for browsers and edge clients that must not hold an API key: the
//! application backend mints a short-lived token for one user session; EventSource cannot set
//! headers, so `?token=` is accepted as well (for read tokens only: a service key in a query
//! string would end up in proxy logs). The token's `session_id` is never logged or used as a
//! metric label (one label per session would grow the series count without bound). Every
//! response to a token-authorized request, and every token failure, carries
//! `Cache-Control: no-store`: a shared cache must never serve one session's grant to another.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sessiond_http::auth::{
    auth_failure, bearer, covers_prefix, missing_credential, KeyGrant, KeyScope, MISSING_KEY,
};
use sessiond_http::jwt::{Hs256Verifier, TokenError};
use sessiond_http::{ApiError, ApiKeys};

use crate::config::StreamsConfig;
use crate::error::StreamResult;

/// What a read token grants.
#[derive(Debug)]
pub struct ReadGrant {
    /// The `session_id` claim: the application's session the token was minted for.
    pub session_id: String,
    /// The optional `stream_prefixes` claim; `None` = any stream.
    pub prefixes: Option<Vec<String>>,
}

/// The authenticated caller of a stream request (a request extension).
#[derive(Clone, Debug)]
pub enum StreamAccess {
    /// No credential where the streams route set is open (open mode or `open_routes`):
    /// every stream but the server-owned ones.
    Open,
    /// A full-access API key.
    Full,
    /// A tenant key limited to path prefixes.
    Key(Arc<KeyScope>),
    /// A read token (GET/HEAD only).
    Read(Arc<ReadGrant>),
}

impl StreamAccess {
    /// Whether this caller may act on the (not server-owned) stream `name`; `write` for
    /// anything but GET/HEAD.
    pub fn permit(&self, name: &str, write: bool) -> StreamResult<()> {
        let allowed = match self {
            StreamAccess::Open | StreamAccess::Full => true,
            StreamAccess::Key(scope) => scope.covers(name) && !(write && scope.read_only),
            StreamAccess::Read(grant) => {
                !write
                    && grant
                        .prefixes
                        .as_ref()
                        .is_none_or(|ps| ps.iter().any(|p| covers_prefix(p, name)))
            }
        };
        if allowed {
            return Ok(());
        }
        failure("forbidden");
        let message = if write && !matches!(self, StreamAccess::Key(s) if !s.read_only) {
            "this credential is read-only"
        } else {
            "this credential does not cover this stream"
        };
        Err(ApiError::forbidden(message).into())
    }

    /// The application session of a read token.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            StreamAccess::Read(grant) => Some(&grant.session_id),
            _ => None,
        }
    }
}

/// Counts refused credentials by a fixed reason (never per session or per stream).
fn failure(reason: &'static str) {
    ::metrics::counter!("sessiond_streams_auth_failures_total", "reason" => reason).increment(1);
}

/// Streams under these first segments belong to the server whatever the configuration says.
pub const SERVER_OWNED_PREFIXES: [&str; 2] = ["__sessiond", "__system"];

/// The guard's state: the server's keys (with its open-mode decision), the read-token
/// verifier, and which streams the server owns.
#[derive(Clone)]
pub struct StreamGuard {
    keys: ApiKeys,
    tokens: Option<Hs256Verifier>,
    audience: Arc<str>,
    open: bool,
    server_owned: Arc<Vec<String>>,
    max_name_bytes: usize,
}

impl StreamGuard {
    /// Keys from the server; read-token secrets, audience and name limit from `[streams]`;
    /// the configured metrics stream is server-owned.
    pub fn new(keys: ApiKeys, config: &StreamsConfig) -> Self {
        let server_owned = SERVER_OWNED_PREFIXES
            .iter()
            .map(|p| p.to_string())
            .chain(config.metrics_stream.clone())
            .collect();
        StreamGuard {
            open: keys.is_open(),
            keys,
            tokens: Hs256Verifier::new(&config.read_token_secrets, config.max_read_token_bytes),
            audience: config.read_token_audience.as_str().into(),
            server_owned: Arc::new(server_owned),
            max_name_bytes: config.max_name_bytes,
        }
    }

    /// Also serves anonymous callers (`open_routes` includes the streams set).
    pub fn open_routes(mut self, open: bool) -> Self {
        self.open |= open;
        self
    }

    /// Also treats these streams (and everything under them) as server-owned: the event
    /// streams other capabilities write.
    pub fn server_owned<I: IntoIterator<Item = String>>(mut self, names: I) -> Self {
        let mut all = self.server_owned.as_ref().clone();
        all.extend(names.into_iter().filter(|n| !n.is_empty()));
        self.server_owned = Arc::new(all);
        self
    }

    /// Whether `name` is (under) a server-owned stream.
    pub fn is_server_owned(&self, name: &str) -> bool {
        self.server_owned
            .iter()
            .any(|owned| name == owned.trim_end_matches('/') || covers_prefix(owned, name))
    }

    /// Checks `access` for a request on `name`, and for a fork also on its source.
    pub fn authorize(
        &self,
        access: &StreamAccess,
        method: &Method,
        name: &str,
        headers: &HeaderMap,
    ) -> StreamResult<()> {
        let write = !(method == Method::GET || method == Method::HEAD);
        self.permit(access, name, write)?;
        if method == Method::PUT {
            if let Some(fork) = crate::fork::parse_request(headers, self.max_name_bytes)? {
                // The source is read, never written: reading it is what needs the grant.
                self.permit(access, &fork.source, false)?;
            }
        }
        Ok(())
    }

    fn permit(&self, access: &StreamAccess, name: &str, write: bool) -> StreamResult<()> {
        if !self.is_server_owned(name) {
            return access.permit(name, write);
        }
        failure("server_owned");
        Err(match (access, write) {
            (StreamAccess::Full, false) => return Ok(()),
            (StreamAccess::Full, true) => {
                ApiError::forbidden("this stream is owned by the server: only the server writes it")
            }
            _ => ApiError::forbidden(
                "this stream is owned by the server: it is readable only with a full service key",
            ),
        }
        .into())
    }

    fn read_grant(&self, tokens: &Hs256Verifier, token: &str) -> Result<ReadGrant, ApiError> {
        let now_s = sessiond_store::now_ms() as f64 / 1000.0;
        let claims = tokens.verify(token, now_s).map_err(|e| {
            failure(match e {
                TokenError::Expired => "token_expired",
                _ => "bad_token",
            });
            ApiError::unauthorized(e.to_string())
        })?;
        let invalid = |what: &str| {
            failure("bad_token");
            ApiError::unauthorized(format!("token {what}"))
        };
        let audience = self.audience.as_ref();
        let for_us = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !for_us {
            return Err(invalid(&format!(
                "needs an aud claim naming `{audience}` (streams.read_token_audience)"
            )));
        }
        let session_id = match claims.get("session_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(invalid("needs a string session_id claim")),
        };
        let prefixes = match claims.get("stream_prefixes") {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().filter(|p| !p.is_empty()).map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| invalid("stream_prefixes must be non-empty strings"))?,
            ),
            Some(_) => return Err(invalid("stream_prefixes must be an array")),
        };
        Ok(ReadGrant {
            session_id,
            prefixes,
        })
    }

    /// Who is calling, from the headers alone; the refusal when nobody acceptable is.
    fn identify(&self, request: &Request) -> Result<StreamAccess, Box<Response>> {
        let presented = bearer(request.headers());
        if let Some(grant) = presented.and_then(|k| self.keys.identify(k.as_bytes())) {
            return Ok(match grant {
                KeyGrant::Full => StreamAccess::Full,
                KeyGrant::Scoped(scope) => StreamAccess::Key(scope),
            });
        }
        if self.open {
            return Ok(StreamAccess::Open);
        }
        let method = request.method();
        let readable = method == Method::GET || method == Method::HEAD;
        if let (Some(tokens), true) = (&self.tokens, readable) {
            let token = presented.or_else(|| query_token(request.uri().query()));
            if let Some(token) = token {
                return self
                    .read_grant(tokens, token)
                    .map(|grant| StreamAccess::Read(Arc::new(grant)))
                    .map_err(|err| Box::new(no_store(auth_failure(err))));
            }
        }
        failure("invalid_key");
        Err(Box::new(auth_failure(if presented.is_some() {
            ApiError::unauthorized("invalid API key")
        } else {
            missing_credential(request.headers(), MISSING_KEY)
        })))
    }
}

/// The `token` query parameter (JWTs are URL-safe, so it is taken as sent).
fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

/// The stream guard as a middleware step (`step::layer(guard)`, as a `route_layer`):
/// authenticates a stream request and authorizes it on the stream its path names, before the
/// body is read; stores a read token's [`StreamAccess`]. API keys first (any method, `Authorization`
/// only); then anonymous access where streams are open; then, for GET/HEAD when read-token
/// secrets are configured, a bearer or `?token=` read token. Preflights pass (browsers send
/// them without credentials). What a read token may read is not cached (`no-store`).
impl sessiond_http::step::Step for StreamGuard {
    /// Whether the answer gets `Cache-Control: no-store` (a read token's).
    type Seen = bool;

    fn before(&self, request: &mut Request) -> (bool, Option<Response>) {
        self.decide(request)
    }

    fn after(&self, token: bool, response: Response) -> Response {
        if token {
            no_store(response)
        } else {
            response
        }
    }
}

impl StreamGuard {
    /// Whether the caller holds a read token, and the refusal when it may not go on.
    fn decide(&self, request: &mut Request) -> (bool, Option<Response>) {
        let guard = self;
        if request.method() == Method::OPTIONS {
            return (false, None);
        }
        let access = match guard.identify(request) {
            Ok(access) => access,
            Err(response) => return (false, Some(*response)),
        };
        let token = matches!(access, StreamAccess::Read(_));
        let path = request.uri().path();
        if path == crate::protocol::LIST_PATH {
            // Listing: which prefixes the caller may see is the handler's (it needs the
            // query); a read token is for one user's reads and never lists.
            if token {
                failure("forbidden");
                let refusal = ApiError::forbidden("read tokens cannot list streams");
                return (false, Some(no_store(refusal.into_response())));
            }
            request.extensions_mut().insert(guard.clone());
            request.extensions_mut().insert(access);
            return (false, None);
        }
        // `PATCH /v1/streams/<name>` (retention) acts on the stream `<name>`: same decision.
        // `GET /v1/stream-producers/<name>` reads about `<name>`, but not with a read token.
        let producers = path.strip_prefix(crate::protocol::PRODUCERS_PREFIX);
        if producers.is_some() && token {
            failure("forbidden");
            let refusal = ApiError::forbidden("read tokens cannot list producers");
            return (false, Some(no_store(refusal.into_response())));
        }
        let path = match producers.or_else(|| path.strip_prefix(crate::protocol::PATCH_PREFIX)) {
            Some(name) => {
                std::borrow::Cow::Owned(format!("{}{name}", crate::protocol::STREAM_PREFIX))
            }
            None => std::borrow::Cow::Borrowed(path),
        };
        // An invalid name is the handler's to report (400/404/501), with nothing to authorize.
        if let Ok(name) = crate::headers::stream_name(&path, guard.max_name_bytes) {
            let decision = guard.authorize(&access, request.method(), name, request.headers());
            if let Err(err) = decision {
                let response = err.into_response();
                return (
                    false,
                    Some(if token { no_store(response) } else { response }),
                );
            }
        }
        // Below the guard only a read token's grant is read (a bound read's session), so only
        // that one is stored: one request extension fewer for every write.
        if token {
            request.extensions_mut().insert(access);
        }
        (token, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(prefixes: &[&str], read_only: bool) -> StreamAccess {
        StreamAccess::Key(Arc::new(KeyScope {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            read_only,
        }))
    }

    #[test]
    fn scoped_keys_and_read_grants() {
        let tenant = key(&["a/"], false);
        assert!(tenant.permit("a/x", true).is_ok());
        assert!(tenant.permit("ab/x", false).is_err());
        let reader = key(&["a/"], true);
        assert!(reader.permit("a/x", false).is_ok());
        assert_eq!(
            reader
                .permit("a/x", true)
                .map_err(|e| e.api.status.as_u16()),
            Err(403)
        );
        let token = StreamAccess::Read(Arc::new(ReadGrant {
            session_id: "s".into(),
            prefixes: Some(vec!["a/".into()]),
        }));
        assert!(token.permit("a/x", false).is_ok());
        assert!(token.permit("a/x", true).is_err());
        assert!(token.permit("b/x", false).is_err());
        assert_eq!(token.session_id(), Some("s"));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        for prefix in ["tenant-a", "tenant-a/"] {
            let tenant = key(&[prefix], false);
            assert!(tenant.permit("tenant-a/x", true).is_ok(), "{prefix}");
            assert!(tenant.permit("tenant-abc/x", false).is_err(), "{prefix}");
            assert!(tenant.permit("tenant-a", false).is_err(), "{prefix}");
        }
    }

    #[test]
    fn server_owned_streams_are_read_by_full_keys_only() {
        let config = StreamsConfig {
            metrics_stream: Some("_system/metrics".into()),
            ..StreamsConfig::default()
        };
        let guard = StreamGuard::new(ApiKeys::new(["k"]), &config)
            .server_owned(["apps/presence".to_string()]);
        let get = Method::GET;
        let headers = HeaderMap::new();
        for name in [
            "__sessiond/x",
            "__system/a/b",
            "_system/metrics",
            "apps/presence",
        ] {
            assert!(guard.is_server_owned(name), "{name}");
            assert!(guard
                .authorize(&StreamAccess::Full, &get, name, &headers)
                .is_ok());
            for method in [Method::PUT, Method::POST, Method::DELETE] {
                let full = guard.authorize(&StreamAccess::Full, &method, name, &headers);
                assert_eq!(full.map_err(|e| e.api.status.as_u16()), Err(403));
            }
            for access in [
                StreamAccess::Open,
                key(&["__sessiond", "__system", "_system", "apps"], false),
            ] {
                assert!(
                    guard.authorize(&access, &get, name, &headers).is_err(),
                    "{name}"
                );
            }
        }
        for name in [
            "__sessiondx/y",
            "_system/metricsx",
            "apps/presence2",
            "app/x",
        ] {
            assert!(!guard.is_server_owned(name), "{name}");
        }
    }

    #[test]
    fn query_token_is_found_among_other_parameters() {
        assert_eq!(
            query_token(Some("offset=-1&token=abc.def&live=sse")),
            Some("abc.def")
        );
        assert_eq!(query_token(Some("offset=-1&xtoken=1")), None);
        assert_eq!(query_token(None), None);
    }
}
