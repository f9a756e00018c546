//! One error type for every JSON API, with a stable body, and the one mapping from engine
//! failures to HTTP.
//!
//! Every failure a client can see is `{"error": {"code": "...", "message": "..."}}` with the
//! status that names whose fault it was. Client mistakes get a 4xx and a message that helps
//! fix the request; server faults get a 5xx whose body hides the detail (it is logged instead),
//! so internals never leak to clients. Capabilities with protocol headers (Durable Streams'
//! `Stream-*`, `Producer-*`) or extra body fields (the `__ds` control APIs) wrap an
//! [`ApiError`] and answer through [`ApiError::respond`], so the status, body and
//! `Retry-After` discipline below is decided here once and cannot drift between them.
//!
//! # Engine failures
//!
//! Stores report only server-side conditions ([`StoreError`]); the runtime adds its own
//! ([`RuntimeError`]). Each becomes exactly one answer, whichever route met it:
//!
//! | failure | status | `code` | headers | log |
//! |---|---|---|---|---|
//! | `StoreError::Unavailable` | 503 | `unavailable` | `Retry-After: 1` | error, with the engine's detail |
//! | `StoreError::Corrupt` | 500 | `internal` | | error, `corrupt record: …` naming the record |
//! | `RuntimeError::Store(e)` | as `e` | | | |
//! | `RuntimeError::Codec` | 500 | `internal` | | error, naming kind and key |
//! | `RuntimeError::NotPersistent` | 500 | `internal` | | error (a wiring bug) |
//!
//! Why these: an unreachable engine is transient, so the client is told to come back
//! (503 + `Retry-After`); a record that cannot be decoded stays broken however often it is
//! read, so it is a 500 — a 503 would invite retry storms on a record no retry can fix — and
//! the operator needs the record named in the log, not the client. Lost compare-and-set races
//! are not store errors: stores report them as values, and each capability decides how often
//! to try again before answering (sessions: 409 `conflict`; streams: 503 `stale`;
//! subscriptions: 503 `CONTENDED`, both with `Retry-After`).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};
use sessiond_runtime::RuntimeError;
use sessiond_store::StoreError;

/// An API failure: status, machine-readable code, human message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `not_found`.
    pub code: &'static str,
    /// Short human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// Any status/code/message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: malformed or invalid input.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: missing or wrong credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: authenticated, but this credential may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such resource (or expired).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 412: an `If-Match` precondition failed.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        )
    }

    /// 413: body or value above a configured limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 429: a count or rate limit was reached.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "limit_reached", message)
    }

    /// 500 with a generic body; the detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
}

impl ApiError {
    /// The response, with `extra` fields beside `code` and `message` in the body and
    /// `headers` (protocol headers) added. Every 503 carries `Retry-After: 1`.
    pub fn respond(self, extra: Map<String, Value>, headers: Option<HeaderMap>) -> Response {
        let mut error = extra;
        error.insert("code".into(), Value::from(self.code));
        error.insert("message".into(), Value::from(self.message.as_str()));
        let body = serde_json::json!({ "error": error });
        let mut response = (self.status, Json(body)).into_response();
        // For the access log: what the client was told (never a credential: no message
        // echoes one).
        response
            .extensions_mut()
            .insert(crate::access::ErrorMessage(self.message));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        if let Some(headers) = headers {
            response.headers_mut().extend(headers);
        }
        response
    }
}

/// The mapping of the module doc's table.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "storage engine unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage engine unavailable, retry later",
                )
            }
            StoreError::Corrupt(detail) => Self::internal(format!("corrupt record: {detail}")),
        }
    }
}

/// The mapping of the module doc's table.
impl From<RuntimeError> for ApiError {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::Store(e) => e.into(),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond(Map::new(), None)
    }
}

/// The JSON form of the router's 405. The router answers a known path called with the wrong
/// method by a bare 405 (with `Allow`); this gives it the same JSON body as every other error,
/// keeping `Allow`. Applied once for the whole application ([`crate::server_layer`]), so
/// every route set — nested compat prefixes included — answers alike; any other response is
/// returned as it is.
pub fn method_not_allowed_as_json(method: &axum::http::Method, response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let message = match allow.as_ref().and_then(|v| v.to_str().ok()) {
        Some(allowed) => format!("method {method} is not allowed here; allowed: {allowed}"),
        None => format!("method {method} is not allowed here"),
    };
    let mut json = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    )
    .into_response();
    if let Some(allow) = allow {
        json.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    json
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(err: ApiError) -> (StatusCode, Option<String>, Value) {
        let response = err.into_response();
        let status = response.status();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, retry, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn store_failures_map_once() {
        let (status, retry, body) =
            answer(StoreError::Unavailable("socket closed at 10.0.0.7".into()).into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(!body.to_string().contains("10.0.0.7"), "{body}");

        let (status, retry, body) =
            answer(StoreError::Corrupt("session s1: bad json".into()).into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry, None);
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "internal", "message": "internal server error"}})
        );
    }

    #[tokio::test]
    async fn runtime_failures_follow_the_store_mapping() {
        let store = RuntimeError::Store(StoreError::Unavailable("down".into()));
        let (status, retry, _) = answer(store.into()).await;
        assert_eq!(
            (status, retry.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        );
        let codec = RuntimeError::Codec {
            kind: "users".into(),
            key: "u1".into(),
            source: sessiond_runtime::CodecError::new("expected value"),
        };
        let (status, retry, body) = answer(codec.into()).await;
        assert_eq!((status, retry), (StatusCode::INTERNAL_SERVER_ERROR, None));
        assert_eq!(body["error"]["code"], "internal");
    }

    #[tokio::test]
    async fn respond_keeps_protocol_headers_and_fields() {
        let mut headers = HeaderMap::new();
        headers.insert("stream-next-offset", HeaderValue::from_static("0_5"));
        let mut extra = Map::new();
        extra.insert("generation".into(), Value::from(3));
        let response = ApiError::conflict("closed").respond(extra, Some(headers));
        assert_eq!(response.headers()["stream-next-offset"], "0_5");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            r#"{"error":{"code":"conflict","generation":3,"message":"closed"}}"#
        );
    }
}
