//! Who may do what on which stream: full API keys, tenant keys scoped to path prefixes, and
//! HS256 read tokens for GET/HEAD.
//!
//! Authentication and authorization are split on purpose. [`require_stream_access`] (the
//! route guard, installed by the server when keys are configured) only finds out *who* is
//! calling and stores a [`StreamAccess`] in the request's extensions; the dispatcher, which
//! has the validated stream name (and a fork's source), asks [`StreamAccess::permit`]
//! whether that caller may touch it, before any storage is read, so an out-of-scope caller
//! learns nothing about another tenant's streams (403 whether or not the stream exists).
//!
//! Read tokens exist for browsers and edge clients that must not hold an API key: the
//! application backend mints a short-lived token for one user session; EventSource cannot set
//! headers, so `?token=` is accepted as well. The token's `session_id` is available to the
//! handlers through the extension and is never logged or used as a metric label (one label
//! per session would grow the series count without bound). Every response to a
//! token-authorized request, and every token failure, carries `Cache-Control: no-store`: a
//! shared cache must never serve one session's grant to another.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;
use sessiond_http::auth::{auth_failure, bearer, KeyGrant, KeyScope};
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

/// The authenticated caller of a stream request (a request extension). Absent when the
/// streams route set is open (no key configured, or `open_routes`): everything is allowed.
#[derive(Clone, Debug)]
pub enum StreamAccess {
    /// A full-access API key.
    Full,
    /// A tenant key limited to path prefixes.
    Key(Arc<KeyScope>),
    /// A read token (GET/HEAD only).
    Read(Arc<ReadGrant>),
}

impl StreamAccess {
    /// Whether this caller may act on stream `name`; `write` for anything but GET/HEAD.
    pub fn permit(&self, name: &str, write: bool) -> StreamResult<()> {
        let allowed = match self {
            StreamAccess::Full => true,
            StreamAccess::Key(scope) => scope.covers(name) && !(write && scope.read_only),
            StreamAccess::Read(grant) => {
                !write
                    && grant
                        .prefixes
                        .as_ref()
                        .is_none_or(|ps| ps.iter().any(|p| name.starts_with(p.as_str())))
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

/// The guard's state: the server's keys and, when configured, the read-token verifier.
#[derive(Clone)]
pub struct StreamGuard {
    keys: ApiKeys,
    tokens: Option<Hs256Verifier>,
}

impl StreamGuard {
    /// Keys from the server; read-token secrets from `[streams]`.
    pub fn new(keys: ApiKeys, config: &StreamsConfig) -> Self {
        StreamGuard {
            keys,
            tokens: Hs256Verifier::new(&config.read_token_secrets, config.max_read_token_bytes),
        }
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

/// Middleware (with `from_fn_with_state`): authenticates a stream request and stores its
/// [`StreamAccess`]. API keys first (any method); then, for GET/HEAD when read-token secrets
/// are configured, a bearer or `?token=` read token. Preflights pass (browsers send them
/// without credentials).
pub async fn require_stream_access(
    State(guard): State<StreamGuard>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    if method == Method::OPTIONS {
        return next.run(request).await;
    }
    // Fast path: an API key, without copying anything.
    let key = bearer(request.headers()).and_then(|k| guard.keys.identify(k.as_bytes()));
    if let Some(grant) = key {
        let access = match grant {
            KeyGrant::Full => StreamAccess::Full,
            KeyGrant::Scoped(scope) => StreamAccess::Key(scope),
        };
        request.extensions_mut().insert(access);
        return next.run(request).await;
    }
    let presented = bearer(request.headers()).map(str::to_owned);
    let readable = method == Method::GET || method == Method::HEAD;
    if let (Some(tokens), true) = (&guard.tokens, readable) {
        let token = presented
            .clone()
            .or_else(|| query_token(request.uri().query()).map(str::to_owned));
        if let Some(token) = token {
            return match guard.read_grant(tokens, &token) {
                Ok(grant) => {
                    request
                        .extensions_mut()
                        .insert(StreamAccess::Read(Arc::new(grant)));
                    no_store(next.run(request).await)
                }
                Err(err) => no_store(auth_failure(err)),
            };
        }
    }
    failure("invalid_key");
    auth_failure(if presented.is_some() {
        ApiError::unauthorized("invalid API key")
    } else {
        ApiError::unauthorized("missing API key: send Authorization: Bearer <key>")
    })
}

/// Checks `access` (if any) for a request on `name`, and for a fork also on its source.
pub fn authorize(
    access: Option<&StreamAccess>,
    method: &Method,
    name: &str,
    headers: &axum::http::HeaderMap,
) -> StreamResult<()> {
    let Some(access) = access else {
        return Ok(());
    };
    if matches!(access, StreamAccess::Full) {
        return Ok(());
    }
    let write = !(method == Method::GET || method == Method::HEAD);
    access.permit(name, write)?;
    if method == Method::PUT {
        if let Some(fork) = crate::fork::parse_request(headers, usize::MAX)? {
            // The source is read, never written: reading it is what needs the grant.
            access.permit(&fork.source, false)?;
        }
    }
    Ok(())
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
    fn query_token_is_found_among_other_parameters() {
        assert_eq!(
            query_token(Some("offset=-1&token=abc.def&live=sse")),
            Some("abc.def")
        );
        assert_eq!(query_token(Some("offset=-1&xtoken=1")), None);
        assert_eq!(query_token(None), None);
    }
}
