//! Errors of the `__ds` control APIs: `{"error": {"code": "...", "message": "...", …}}` with
//! the protocol's upper-case codes (`FENCED`, `ALREADY_CLAIMED`, `WEBHOOK_URL_REJECTED`) and,
//! for a busy claim, the current holder and generation next to the code.
//!
//! A `SubError` is the shared `ApiError` plus those fields and any protocol headers of a
//! stream failure met on the way, answered through `ApiError::respond`: engine failures map
//! exactly as on every other route (`sessiond_http::error`, docs/api.md#errors), and a
//! stream error keeps its `Stream-*` headers.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use sessiond_http::ApiError;
use sessiond_store::StoreError;

/// A control-API failure (boxed: errors are rare, results are hot).
#[derive(Debug, thiserror::Error)]
#[error("{api}")]
pub struct SubError {
    api: Box<ApiError>,
    extra: Map<String, Value>,
    headers: Option<Box<HeaderMap>>,
}

/// Result alias.
pub type SubResult<T> = Result<T, SubError>;

impl SubError {
    /// Any failure.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(status, code, message).into()
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
        self.api.code == "CONTENDED"
    }
    /// Adds a field next to `code`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }
}

impl From<ApiError> for SubError {
    fn from(api: ApiError) -> Self {
        SubError {
            api: Box::new(api),
            extra: Map::new(),
            headers: None,
        }
    }
}

impl From<StoreError> for SubError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<sessiond_runtime::RuntimeError> for SubError {
    fn from(e: sessiond_runtime::RuntimeError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<crate::error::StreamError> for SubError {
    fn from(e: crate::error::StreamError) -> Self {
        SubError {
            api: e.api,
            extra: Map::new(),
            headers: e.headers,
        }
    }
}

impl IntoResponse for SubError {
    fn into_response(self) -> Response {
        (*self.api).respond(self.extra, self.headers.map(|h| *h))
    }
}

/// A management or worker body: one JSON object (never an array read as positional fields).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> SubResult<T> {
    if !sessiond_http::body::is_json_object(body) {
        return Err(SubError::bad_request(sessiond_http::body::NOT_AN_OBJECT));
    }
    serde_json::from_slice(body).map_err(|e| SubError::bad_request(format!("invalid body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StreamError;

    /// Status, `Retry-After` and the exact body bytes.
    async fn wire(response: Response) -> (StatusCode, Option<String>, String) {
        let status = response.status();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, retry, String::from_utf8_lossy(&body).into_owned())
    }

    fn failures() -> [fn() -> StoreError; 2] {
        [
            || StoreError::Unavailable("connection refused".into()),
            || StoreError::Corrupt("stream s: bad metadata".into()),
        ]
    }

    /// A sessions route answers `ApiError`, a streams route `StreamError`, a subscriptions
    /// route `SubError`: one storage failure must look the same through each.
    #[tokio::test]
    async fn a_store_failure_answers_alike_on_every_route() {
        for failure in failures() {
            let sessions = wire(ApiError::from(failure()).into_response()).await;
            let streams = wire(StreamError::from(failure()).into_response()).await;
            let subscriptions = wire(SubError::from(failure()).into_response()).await;
            let via_runtime = sessiond_runtime::RuntimeError::Store(failure());
            let objects = wire(SubError::from(via_runtime).into_response()).await;
            assert_eq!(sessions, streams);
            assert_eq!(sessions, subscriptions);
            assert_eq!(sessions, objects);
        }
        let unavailable = wire(SubError::from(failures()[0]()).into_response()).await;
        assert_eq!(
            unavailable,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("1".to_owned()),
                r#"{"error":{"code":"unavailable","message":"storage engine unavailable, retry later"}}"#
                    .to_owned()
            )
        );
        let corrupt = wire(SubError::from(failures()[1]()).into_response()).await;
        assert_eq!(
            corrupt,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                r#"{"error":{"code":"internal","message":"internal server error"}}"#.to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_stream_error_keeps_its_protocol_headers_on_a_subscription_route() {
        let closed = StreamError::conflict("stream is closed")
            .with(crate::protocol::NEXT_OFFSET, "0000_0005")
            .with(crate::protocol::CLOSED, "true");
        let response = SubError::from(closed).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            response.headers()[crate::protocol::NEXT_OFFSET],
            "0000_0005"
        );
        assert_eq!(response.headers()[crate::protocol::CLOSED], "true");
    }

    #[tokio::test]
    async fn extra_fields_sit_beside_the_code() {
        let busy = SubError::new(StatusCode::CONFLICT, "ALREADY_CLAIMED", "claimed")
            .with("holder", "w1")
            .with("generation", 4);
        let (status, retry, body) = wire(busy.into_response()).await;
        assert_eq!((status, retry), (StatusCode::CONFLICT, None));
        assert_eq!(
            body,
            r#"{"error":{"code":"ALREADY_CLAIMED","generation":4,"holder":"w1","message":"claimed"}}"#
        );
    }
}
