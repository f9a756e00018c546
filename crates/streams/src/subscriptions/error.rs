//! Errors of the `__ds` control APIs: `{"error": {"code": "...", "message": "...", …}}` with
//! the protocol's upper-case codes (`FENCED`, `ALREADY_CLAIMED`, `WEBHOOK_URL_REJECTED`) and,
//! for a busy claim, the current holder and generation next to the code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use sessiond_store::StoreError;

/// A control-API failure.
#[derive(Debug)]
pub struct SubError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Map<String, Value>,
}

/// Result alias.
pub type SubResult<T> = Result<T, SubError>;

impl SubError {
    /// Any failure.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        SubError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }
    /// 400 `BAD_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }
    /// 404 `NOT_FOUND`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such subscription")
    }
    /// 409 `FENCED`: stale generation, wake id or token.
    pub fn fenced() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "FENCED",
            "the wake is no longer current (stale generation, wake_id or token)",
        )
    }
    /// 401: no bearer token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "send Authorization: Bearer <token from the wake or claim>",
        )
    }
    /// The record changed in the store since it was read (another node wrote it): the
    /// operation is run again on fresh state (`Subscriptions::retrying`); a client sees it
    /// only after `MAX_RACES` lost races in a row, as a 503.
    pub fn raced() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "CONTENDED",
            "the subscription is changing on other nodes; retry",
        )
    }
    /// Whether this is [`raced`](Self::raced).
    pub fn is_raced(&self) -> bool {
        self.code == "CONTENDED"
    }
    /// Adds a field next to `code`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }
}

impl From<StoreError> for SubError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "subscription storage failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "storage unavailable",
        )
    }
}

impl From<sessiond_runtime::RuntimeError> for SubError {
    fn from(e: sessiond_runtime::RuntimeError) -> Self {
        tracing::error!(error = %e, "subscription storage failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "storage unavailable",
        )
    }
}

impl From<crate::error::StreamError> for SubError {
    fn from(e: crate::error::StreamError) -> Self {
        Self::new(e.api.status, e.api.code, e.api.message.clone())
    }
}

impl IntoResponse for SubError {
    fn into_response(self) -> Response {
        let mut error = self.extra;
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// A management or worker body: one JSON object (never an array read as positional fields).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> SubResult<T> {
    if !sessiond_http::body::is_json_object(body) {
        return Err(SubError::bad_request(sessiond_http::body::NOT_AN_OBJECT));
    }
    serde_json::from_slice(body).map_err(|e| SubError::bad_request(format!("invalid body: {e}")))
}
