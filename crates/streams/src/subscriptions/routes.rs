//! The `__ds` routes. They are registered as static routes under `/v1/stream/__ds/`, which
//! the router matches before the `/v1/stream/{*path}` wildcard, so control paths are never
//! taken for application streams (PROTOCOL.md §6).
//!
//! Two routers, because they authenticate differently: [`control_router`] (subscription
//! management, claim) sits behind the server's API-key guard like the streams;
//! [`token_router`] (callback, ack, release) is authenticated by each wake's bearer token,
//! and the JWKS is a public key receivers must fetch without a credential: both stay outside
//! that guard. Both carry the streams' CORS and security headers.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use sessiond_http::step;

use super::error::SubError;
use super::Subscriptions;

const SUB: &str = "/v1/stream/__ds/subscriptions/{id}";

/// Management and claim (behind the API-key guard when keys are configured).
pub fn control_router(subs: Subscriptions) -> Router {
    Router::new()
        .route(SUB, put(put_sub).get(get_sub).delete(delete_sub))
        .route(&format!("{SUB}/streams"), post(add_streams))
        .route(
            &format!("{SUB}/streams/{{*path}}"),
            axum::routing::delete(remove_stream),
        )
        .route(&format!("{SUB}/claim"), post(claim))
        .route("/v1/stream/__ds/{*rest}", any(unknown))
        .with_state(subs)
        .layer(step::layer(crate::headers::CommonHeaders))
}

/// Callback, ack and release (authenticated by the wake's bearer token) and the public key
/// set (anyone).
pub fn token_router(subs: Subscriptions) -> Router {
    Router::new()
        .route("/v1/stream/__ds/jwks.json", get(jwks))
        .route(&format!("{SUB}/callback"), post(ack))
        .route(&format!("{SUB}/ack"), post(ack))
        .route(&format!("{SUB}/release"), post(release))
        .with_state(subs)
        .layer(step::layer(crate::headers::CommonHeaders))
}

fn respond(result: Result<Response, SubError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn jwks(State(s): State<Subscriptions>) -> Response {
    s.jwks()
}

async fn put_sub(
    State(s): State<Subscriptions>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(s.put(&id, &headers, body).await)
}

async fn get_sub(State(s): State<Subscriptions>, Path(id): Path<String>) -> Response {
    respond(s.get(&id).await)
}

async fn delete_sub(State(s): State<Subscriptions>, Path(id): Path<String>) -> Response {
    respond(s.delete(&id).await)
}

async fn add_streams(
    State(s): State<Subscriptions>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    respond(s.add_streams(&id, body).await)
}

async fn remove_stream(
    State(s): State<Subscriptions>,
    Path((id, path)): Path<(String, String)>,
) -> Response {
    respond(s.remove_stream(&id, &path).await)
}

async fn claim(State(s): State<Subscriptions>, Path(id): Path<String>, body: Bytes) -> Response {
    respond(s.claim(&id, body).await)
}

async fn ack(
    State(s): State<Subscriptions>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(s.ack(&id, &headers, body).await)
}

async fn release(
    State(s): State<Subscriptions>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(s.release(&id, &headers, body).await)
}

async fn unknown() -> Response {
    SubError::new(
        axum::http::StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such __ds control API",
    )
    .into_response()
}
