//! Failures of stream requests: the shared `ApiError` body plus the protocol headers some
//! failures must carry (`Stream-Closed` + `Stream-Next-Offset` on a 409 for a closed stream,
//! `Producer-Epoch` on a 403, `Producer-Expected-Seq` on a sequence gap).
//!
//! Engine failures are not decided here: they go through `sessiond_http::error`'s one mapping
//! (the table there and in docs/api.md#errors), so a stream route answers a broken or
//! unreachable store exactly as every other route does.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_http::ApiError;
use sessiond_runtime::RuntimeError;
use sessiond_store::StoreError;

/// An error response with optional extra headers (boxed: errors are rare, results are hot).
#[derive(Debug, thiserror::Error)]
#[error("{api}")]
pub struct StreamError {
    /// The JSON error.
    pub api: Box<ApiError>,
    /// Headers added to the response.
    pub headers: Option<Box<HeaderMap>>,
}

impl StreamError {
    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(status, code, message).into()
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::bad_request(message).into()
    }
    /// 404.
    pub fn not_found() -> Self {
        ApiError::not_found("no such stream").into()
    }
    /// 410: soft-deleted (or expired while forks still read it).
    pub fn gone() -> Self {
        Self::new(StatusCode::GONE, "gone", "stream was deleted")
    }
    /// 410: the offset is below the stream's retained start (trimmed by retention); names
    /// the earliest retained offset in the message and in `Stream-Start-Offset`.
    pub fn offset_gone(start: u64) -> Self {
        let start = crate::offset::format(start);
        Self::new(
            StatusCode::GONE,
            "offset_gone",
            format!("data before offset {start} was removed by retention; the earliest retained offset is {start}"),
        )
        .with(crate::protocol::START_OFFSET, start)
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::conflict(message).into()
    }
    /// 503 + Retry-After.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
    }

    /// 503: a commit lost a race with another node (the stream changed under it); the
    /// request may be decided again on fresh state (see [`StreamError::is_stale`]).
    pub fn stale() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stale",
            "the stream changed concurrently; retry",
        )
    }

    /// True for [`StreamError::stale`].
    pub fn is_stale(&self) -> bool {
        self.api.code == "stale"
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers
                .get_or_insert_with(Default::default)
                .insert(HeaderName::from_static(name), v);
        }
        self
    }
}

impl From<ApiError> for StreamError {
    fn from(api: ApiError) -> Self {
        StreamError {
            api: Box::new(api),
            headers: None,
        }
    }
}

impl From<StoreError> for StreamError {
    fn from(err: StoreError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<RuntimeError> for StreamError {
    fn from(err: RuntimeError) -> Self {
        ApiError::from(err).into()
    }
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        (*self.api).respond(serde_json::Map::new(), self.headers.map(|h| *h))
    }
}

/// Result alias.
pub type StreamResult<T> = Result<T, StreamError>;
