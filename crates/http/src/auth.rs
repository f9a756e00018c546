//! API-key authentication: `Authorization: Bearer <key>`.
//!
//! Several keys can be valid at once so operators can rotate: add the new key, move clients,
//! remove the old one. Keys are compared in constant time (`subtle`), and every configured key
//! is compared on every request, so timing reveals neither which key matched nor how much of a
//! guess was right. With no key configured the server runs open (development mode; the binary
//! refuses that on a non-loopback address).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The set of accepted keys.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<Vec<Vec<u8>>>,
}

impl ApiKeys {
    /// Accept these keys (empty = open mode).
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .map(|k| k.as_ref().trim().as_bytes().to_vec())
            .filter(|k| !k.is_empty())
            .collect();
        ApiKeys {
            keys: Arc::new(keys),
        }
    }

    /// True when no key is configured (every request is allowed).
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `candidate` equals one of the keys, in constant time over all keys.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let mut matched = subtle::Choice::from(0u8);
        for key in self.keys.iter() {
            matched |= key.as_slice().ct_eq(candidate);
        }
        matched.into()
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match token {
            Some(token) if self.accepts(token.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::unauthorized("invalid API key")),
            None => Err(ApiError::unauthorized(
                "missing API key: send Authorization: Bearer <key>",
            )),
        }
    }
}

/// Middleware: reject requests without a valid key (use with `from_fn_with_state`).
///
/// CORS preflights (`OPTIONS`) pass without a key: browsers never attach credentials to a
/// preflight, so rejecting it would make every cross-origin call fail before the real,
/// authenticated request is even sent. The preflight reveals nothing and changes nothing; the
/// route's own handling (or the CORS layer) answers it.
pub async fn require_api_key(
    State(keys): State<ApiKeys>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == axum::http::Method::OPTIONS {
        return next.run(request).await;
    }
    match keys.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => {
            let mut response = err.into_response();
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, StatusCode};
    use axum::middleware::from_fn_with_state;
    use axum::routing::any;
    use tower::ServiceExt;

    async fn status(method: Method, auth: Option<&str>) -> StatusCode {
        let keys = ApiKeys::new(["secret"]);
        let app = axum::Router::new()
            .route("/x", any(|| async { "ok" }))
            .route_layer(from_fn_with_state(keys, require_api_key));
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
