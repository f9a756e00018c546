//! The HTTP surface: `/v1/stream/<path>` for every method, plus preflights, and the
//! operators' listing at `/v1/streams` (see [`crate::list`]).
//!
//! One wildcard route dispatches on the method so that the stream name is taken verbatim
//! from the request path (still percent-encoded): `Stream-Forked-From` carries the same raw
//! path, so the two always name the same stream. Names are limited in length and may not
//! contain control characters or empty/dot segments; `__ds` as the first segment is reserved
//! by the protocol for control APIs and is not a stream ([`crate::headers::stream_name`]).
//!
//! The top of the crate: the router names every operation, and nothing below names it.

use axum::extract::{OriginalUri, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, patch};
use axum::Router;
use sessiond_http::step;

use crate::error::{StreamError, StreamResult};
use crate::headers::stream_name;
use crate::service::Streams;

/// The streams router (mount at the root).
pub fn router(streams: Streams) -> Router {
    let limit = streams.config.max_append_bytes;
    let routes = Router::new()
        .route("/v1/stream/{*path}", any(dispatch))
        .route("/v1/streams", get(crate::list::list))
        .route("/v1/streams/{*path}", patch(crate::retention::patch))
        .route(
            "/v1/stream-producers/{*path}",
            get(crate::producer_list::list),
        )
        .with_state(streams);
    // One layer for the three steps (outermost first): a layer each cost a boxed route each,
    // cloned and dropped per request.
    let steps = (
        crate::metrics::DebugTiming,
        (
            crate::headers::CommonHeaders,
            // Every body here is read through `RawBody` or `read_raw`.
            sessiond_http::body::RawBodyLimit(limit),
        ),
    );
    routes.layer(step::layer(steps))
}

/// Takes the whole request (not `HeaderMap`, `OriginalUri` and `Extension` extractors, each a
/// copy made on every request): the headers, the path and the access grant are read from its
/// head, the body from [`sessiond_http::body::read_raw`].
async fn dispatch(State(streams): State<Streams>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = sessiond_http::body::read_raw(&parts, body).await;
    let headers = &parts.headers;
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    let access = parts.extensions.get::<crate::access::StreamAccess>();
    let result = async {
        let name = stream_name(uri.path(), streams.config.max_name_bytes)?;
        // Who may touch `name` was decided by the access guard before the body was read.
        let body = || -> StreamResult<axum::body::Bytes> { body.map_err(StreamError::from) };
        match parts.method {
            Method::PUT => {
                let host = headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("localhost");
                let scheme = headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .filter(|p| *p == "https")
                    .unwrap_or("http");
                let location = format!("{scheme}://{host}{}", uri.path());
                crate::create::create(&streams, name, headers, body()?, &location).await
            }
            Method::POST => crate::append::append(&streams, name, headers, body()?).await,
            Method::GET => {
                let read = crate::read::read(&streams, name, headers, uri.query());
                // A read token bound to an account session reads only while it lives.
                let session = access.and_then(|a| a.session_id());
                match (streams.sessions.get(), session) {
                    (Some(binding), Some(id)) => {
                        let ended = crate::bound::check(binding.clone(), id).await?;
                        crate::bound::bound_read(read, ended).await
                    }
                    _ => read.await,
                }
            }
            Method::HEAD => crate::head::head(&streams, name).await,
            Method::DELETE => crate::delete::delete(&streams, name).await,
            _ => Err(StreamError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET, HEAD, PUT, POST or DELETE",
            )
            .with("allow", "GET, HEAD, PUT, POST, DELETE, OPTIONS")),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
