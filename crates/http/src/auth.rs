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
pub async fn require_api_key(
    State(keys): State<ApiKeys>,
    request: Request,
    next: Next,
) -> Response {
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
