//! Request bodies: raw bytes under the configured size limit, then JSON.
//!
//! axum's own `Json` extractor answers its own error format; every sessiond error must be
//! `ApiError`-shaped, so these extractors map "body too large" to 413 and "not JSON / wrong
//! shape" to 400.
//!
//! An over-limit body is refused from its `Content-Length` before any of it is read: the
//! limit of the route set ([`body_limit`]) travels with the request as [`BodyLimit`]. A body
//! without a length (chunked) is refused once the limit is crossed. Either way the rest is
//! left unread; the listener's lingering close lets the client read the 413 anyway.
//!
//! The media type is checked once for the whole server by [`JsonMedia`]'s middleware step, from the
//! headers, before any body is read: a JSON API that accepted `text/plain` or a form would
//! process a cross-site `<form>` or preflight-free `fetch` from any page (CSRF). Only the seed
//! compatibility surfaces, whose original clients did not always label their JSON, accept an
//! unlabelled or `text/plain` body — and only with an `Authorization` header, which no page
//! can make a browser send cross-site without a CORS preflight.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The body limit of a route set, as a request extension (see [`body_limit`]).
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// Limits the bodies of `router`'s routes to `limit` bytes: axum's `DefaultBodyLimit` for
/// bodies without a length, plus [`BodyLimit`] so that a declared length past it is a 413
/// before anything is read. An inner router's limit overrides an outer one.
pub fn body_limit<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    limit: usize,
) -> axum::Router<S> {
    router.layer(crate::step::layer(BodyLimit(limit)))
}

/// Sets the limit on each request (both extensions in one step, not a layer each).
impl crate::step::Step for BodyLimit {
    type Seen = ();

    fn before(&self, request: &mut Request) -> ((), Option<Response>) {
        DefaultBodyLimit::max(self.0).apply(request);
        request.extensions_mut().insert(*self);
        ((), None)
    }
}

/// The limit of a router whose handlers read bodies only through [`RawBody`], [`JsonBody`]
/// or [`read_raw`] (axum's own body extractors keep the server's limit): sets [`BodyLimit`]
/// alone. A stream append carries eight request extensions otherwise, and the eighth write
/// rehashes the extension map (axum's limit is one more, even when it only replaces the
/// server's).
#[derive(Clone, Copy, Debug)]
pub struct RawBodyLimit(pub usize);

impl crate::step::Step for RawBodyLimit {
    type Seen = ();

    /// Replaces the server's limit in place (an insert would allocate the value's box again).
    fn before(&self, request: &mut Request) -> ((), Option<Response>) {
        match request.extensions_mut().get_mut::<BodyLimit>() {
            Some(set) => *set = BodyLimit(self.0),
            None => {
                request.extensions_mut().insert(BodyLimit(self.0));
            }
        }
        ((), None)
    }
}

/// The error of a request body that did not arrive in time (set by the server's listener).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// Whether `error` or one of its sources is a [`BodyTimedOut`].
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// The raw body; 413 when it exceeds the route set's limit, 408 when it is too slow.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        read_raw(&parts, body).await.map(RawBody)
    }
}

/// axum's limit of a body when no [`BodyLimit`] is set (its `DefaultBodyLimit`'s default).
const UNSET_LIMIT: usize = 2 * 1024 * 1024;

/// Reads the body of a request whose head is `parts`, as [`RawBody`] does: for a handler that
/// takes the whole request and needs its headers after the body (no copy of the header map,
/// as a `HeaderMap` extractor beside `RawBody` makes).
///
/// The body is collected under the route set's [`BodyLimit`] directly (axum's `Bytes`
/// extractor boxes the body once more to apply the same limit, which this step also sets as
/// axum's `DefaultBodyLimit` for the routes that use axum's extractors).
pub async fn read_raw(
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<Bytes, ApiError> {
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .map_or(UNSET_LIMIT, |l| l.0);
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = declared {
        if length > limit as u64 {
            return Err(ApiError::too_large(format!(
                "request body of {length} bytes exceeds the limit of {limit} bytes"
            )));
        }
    }
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(
            "request body exceeds the configured limit",
        )),
        Err(error) if timed_out(&*error) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            BodyTimedOut.to_string(),
        )),
        Err(error) => Err(ApiError::bad_request(format!(
            "Failed to buffer the request body: {error}"
        ))),
    }
}

/// A JSON body decoded into `T` (its media type is checked by [`JsonMedia`]'s middleware step).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if !bytes.is_empty() && !is_json_object(&bytes) {
            return Err(ApiError::bad_request(NOT_AN_OBJECT));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Every JSON API body is one object. serde reads a struct from an array too (`[null, 5]` as
/// its fields in order), so without this check an array slipped through as positional fields
/// (found by the schemathesis run: `PUT /v1/cache/n/k` with `[null, null]` stored `null`).
pub const NOT_AN_OBJECT: &str = "the request body must be a JSON object";

/// Whether JSON text is an object (its first non-whitespace byte is `{`), without parsing it.
pub fn is_json_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

/// Decodes JSON bytes into `T`, mapping failures to a 400 that says what was wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; expected JSON",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Whether a `Content-Type` value is JSON: `application/json` or any `*/*+json` (e.g.
/// `application/merge-patch+json`), parameters ignored.
pub fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .split_once('/')
            .is_some_and(|(kind, sub)| !kind.is_empty() && sub.ends_with("+json"))
}

/// Whether the request announces a body (no `Content-Length: 0`).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Which body types a route set takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonMedia {
    /// JSON media types only (every `/v1` JSON API).
    Strict,
    /// Seed compatibility: also no `Content-Type` or `text/plain`, when the request carries
    /// `Authorization`.
    Compat,
}

/// The 415 for a body that is not labelled JSON, or `None` when the request may proceed.
pub fn check_json_media(headers: &HeaderMap, media: JsonMedia) -> Option<ApiError> {
    if !has_body(headers) {
        return None;
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if content_type.is_some_and(is_json_media_type) {
        return None;
    }
    let lenient = media == JsonMedia::Compat
        && headers.contains_key(AUTHORIZATION)
        && content_type.is_none_or(|t| {
            t.split(';')
                .next()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case("text/plain"))
        });
    if lenient {
        return None;
    }
    Some(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "this API takes JSON: send Content-Type: application/json (or a +json type), not `{}`",
            content_type.unwrap_or("no Content-Type")
        ),
    ))
}

/// As a middleware step (`step::layer(JsonMedia::Strict)`): a request whose body is not
/// labelled JSON gets a 415 before the body is read. Requests without a body pass (the handler says what it
/// needs).
impl crate::step::Step for JsonMedia {
    type Seen = ();

    fn before(&self, request: &mut Request) -> ((), Option<Response>) {
        let refusal = check_json_media(request.headers(), *self).map(IntoResponse::into_response);
        ((), refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn json_media_types() {
        for t in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
            "application/vnd.api+json",
        ] {
            assert!(is_json_media_type(t), "{t}");
        }
        for t in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "+json",
            "json",
        ] {
            assert!(!is_json_media_type(t), "{t}");
        }
    }

    #[test]
    fn strict_and_compat_rules() {
        let body = ("content-length", "2");
        let auth = ("authorization", "Bearer k");
        let strict = JsonMedia::Strict;
        let compat = JsonMedia::Compat;
        assert!(check_json_media(&headers(&[]), strict).is_none(), "no body");
        assert!(check_json_media(&headers(&[body]), strict).is_some());
        assert!(check_json_media(
            &headers(&[body, ("content-type", "application/json")]),
            strict
        )
        .is_none());
        let plain = ("content-type", "text/plain;charset=UTF-8");
        assert!(check_json_media(&headers(&[body, plain, auth]), strict).is_some());
        assert!(check_json_media(&headers(&[body, plain]), compat).is_some());
        assert!(check_json_media(&headers(&[body, plain, auth]), compat).is_none());
        assert!(check_json_media(&headers(&[body, auth]), compat).is_none());
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert!(check_json_media(&headers(&[body, form, auth]), compat).is_some());
        let err = check_json_media(&headers(&[body, form]), strict).expect("415");
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
