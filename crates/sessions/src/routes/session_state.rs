//! Seed B: the Session State Worker's eight routes, wire-compatible with its real client
//! (user-mgmt), mounted under a configurable prefix (default `/compat/session-state`).
//!
//! Kept exactly: paths and methods, `201` + the bare session id as plain text on create, the
//! plain-text status bodies, `/cache/:key` with `{data, ttl}` and a default TTL of 300 s, and
//! `404 Invalid request` for anything else.
//! Fixed (seeds.md §B.5): client errors are 400/413 with a plain-text reason instead of 500;
//! PUT/PATCH of an unknown id is 404 instead of creating it (session fixation); session data
//! must be a JSON object; sessions get the configured idle/absolute TTL; the cache lives in its
//! own namespace (no cache key reaches a session) and falsy values (`0`, `false`, `""`,
//! `null`) are hits; `/get` answers `application/json`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Extension, Router};
use serde_json::{Map, Value};
use sessiond_http::body::parse_json;
use sessiond_http::{ApiError, RawBody};

use crate::cache::Ttl;
use crate::routes::{
    cache_response, durability, plain_error, request_origin, RequestOrigin, SessionsState,
};
use crate::service::{NewSession, Update};

/// The cache namespace of this surface (reserved: native namespaces cannot start with `_`).
pub const CACHE_NAMESPACE: &str = "_session-state";
/// Seed B's default cache TTL in seconds.
pub const DEFAULT_CACHE_TTL_S: u64 = 300;

/// The routes, relative to the prefix.
pub fn router() -> Router<SessionsState> {
    Router::new()
        .route("/create", post(create))
        .route("/get/{id}", get(read))
        .route("/update/{id}", put(replace))
        .route("/add/{id}", patch(add))
        .route("/delete/{id}", axum::routing::delete(remove))
        .route(
            "/cache/{key}",
            get(cache_get).put(cache_put).delete(cache_delete),
        )
        .fallback(invalid_request)
        .method_not_allowed_fallback(invalid_request)
}

type Body = Result<RawBody, ApiError>;

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [("content-type", "text/plain;charset=UTF-8")], body).into_response()
}

async fn invalid_request() -> Response {
    text(StatusCode::NOT_FOUND, "Invalid request")
}

/// Decodes a body that must be a JSON object.
fn object_body(body: Body) -> Result<Map<String, Value>, ApiError> {
    let RawBody(bytes) = body?;
    match parse_json::<Value>(&bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request("session data must be a JSON object")),
    }
}

fn not_found_as_text(err: ApiError) -> Response {
    if err.status == StatusCode::NOT_FOUND {
        text(StatusCode::NOT_FOUND, "Session not found")
    } else {
        plain_error(err)
    }
}

async fn create(
    State(s): State<SessionsState>,
    marked: Option<Extension<RequestOrigin>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let data = object_body(body)?;
        let new = NewSession {
            data,
            origin: request_origin(marked),
            ..NewSession::default()
        };
        s.sessions.create(new, durability(&headers)?).await
    };
    match result.await {
        Ok(record) => (
            StatusCode::CREATED,
            [("content-type", "text/plain;charset=UTF-8")],
            record.id,
        )
            .into_response(),
        Err(err) => plain_error(err),
    }
}

async fn read(State(s): State<SessionsState>, Path(id): Path<String>) -> Response {
    match s.sessions.get(&id).await {
        Ok(record) => ([("content-type", "application/json")], record.data).into_response(),
        Err(err) => not_found_as_text(err),
    }
}

/// PUT `/update/:id` and PATCH `/add/:id`: the same flow, a different merge and answer.
async fn change(
    s: &SessionsState,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    update: fn(Map<String, Value>) -> Update,
    answer: &'static str,
) -> Response {
    let result = async {
        let data = object_body(body)?;
        s.sessions
            .update(id, update(data), None, durability(headers)?)
            .await
    };
    match result.await {
        Ok(_) => text(StatusCode::OK, answer),
        Err(err) => not_found_as_text(err),
    }
}

async fn replace(
    State(s): State<SessionsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    change(&s, &id, &headers, body, Update::Replace, "Session updated").await
}

async fn add(
    State(s): State<SessionsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    change(
        &s,
        &id,
        &headers,
        body,
        Update::Shallow,
        "Session updated with additional data",
    )
    .await
}

async fn remove(
    State(s): State<SessionsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async { s.sessions.delete(&id, None, durability(&headers)?).await };
    match result.await {
        Ok(_) => text(StatusCode::OK, "Session deleted"),
        Err(err) => plain_error(err),
    }
}

async fn cache_get(State(s): State<SessionsState>, Path(key): Path<String>) -> Response {
    match s.cache.get(CACHE_NAMESPACE, &key).await {
        Ok(hit) => cache_response(hit, || text(StatusCode::NOT_FOUND, "Cache miss")),
        Err(err) => plain_error(err),
    }
}

async fn cache_put(
    State(s): State<SessionsState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let RawBody(bytes) = body?;
        let mut fields: Map<String, Value> = parse_json(&bytes)?;
        // A present-but-null `data` is a value to keep; only a missing one is an error.
        let Some(data) = fields.remove("data") else {
            return Err(ApiError::bad_request(
                "body must be {\"data\": <any>, \"ttl\"?: seconds}",
            ));
        };
        let ttl = match fields.remove("ttl") {
            None | Some(Value::Null) => DEFAULT_CACHE_TTL_S,
            Some(v) => v.as_u64().filter(|t| *t > 0).ok_or_else(|| {
                ApiError::bad_request("ttl must be a positive integer number of seconds")
            })?,
        };
        s.cache
            .put(
                CACHE_NAMESPACE,
                &key,
                &data,
                Ttl::Seconds(ttl),
                durability(&headers)?,
            )
            .await
    };
    match result.await {
        Ok(()) => text(StatusCode::OK, "Cache set"),
        Err(err) => plain_error(err),
    }
}

async fn cache_delete(
    State(s): State<SessionsState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        s.cache
            .delete(CACHE_NAMESPACE, &key, durability(&headers)?)
            .await
    };
    match result.await {
        Ok(_) => text(StatusCode::OK, "Cache deleted"),
        Err(err) => plain_error(err),
    }
}
