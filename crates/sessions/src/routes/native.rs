//! The native, versioned JSON API: `/v1/sessions`, `/v1/users/{id}/sessions`, `/v1/cache`.
//! `POST /v1/sessions/{id}/rotate` (optionally with `{"data": <merge patch>}`) answers the
//! session under a new id; the old id is dead at once (see `service/rotate.rs`).
//! `POST /v1/sessions/{id}/touch` extends the idle deadline (204).
//! `POST /v1/sessions/{id}/reauth` records that the user just proved who they are again
//! (`auth_time` = now; 200 with the session).
//!
//! The session resource is `{id, user_id, data, device, created_at, updated_at, last_seen_at,
//! expires_at, idle_expires_at, absolute_expires_at, version, auth_time}` (times in unix
//! milliseconds).
//! `PUT` replaces `data` (`{"data": {...}}`); `PATCH` is a JSON Merge Patch of the resource in
//! which only `data` is writable (`{"data": {"cart": null}}` removes `cart`). `ETag` is the
//! version; `If-Match` makes PUT/PATCH/DELETE conditional (412 on mismatch). `origin` says
//! how the session was created (`service` or `open_route`, see [`sessiond_store::SessionOrigin`]).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sessiond_http::body::parse_json;
use sessiond_http::{ApiError, ApiResult, JsonBody, RawBody};
use sessiond_store::{Millis, SessionRecord};

use crate::cache::Ttl;
use crate::routes::{durability, request_origin, write_conditions, RequestOrigin, SessionsState};
use crate::service::{NewSession, Update};

/// Routes of the native API (mount at the root).
pub fn router() -> Router<SessionsState> {
    Router::new()
        .route("/v1/sessions", axum::routing::post(create))
        .route(
            "/v1/sessions/{id}",
            get(read).put(replace).patch(patch).delete(remove),
        )
        .route(
            "/v1/users/{user_id}/sessions",
            get(list_user).delete(revoke_user),
        )
        .route("/v1/cache/{namespace}", axum::routing::delete(cache_clear))
        .route(
            "/v1/cache/{namespace}/{key}",
            get(cache_get).put(cache_put).delete(cache_delete),
        )
}

/// Routes that act on a user's security boundary (rotation, explicit extension): a full
/// service key is needed whatever `open_routes` says, so the server mounts them under its
/// strict guard.
pub fn service_only_router() -> Router<SessionsState> {
    Router::new()
        .route("/v1/sessions/{id}/rotate", axum::routing::post(rotate))
        .route("/v1/sessions/{id}/touch", axum::routing::post(touch))
        .route("/v1/sessions/{id}/reauth", axum::routing::post(reauth))
}

/// The session resource as sent: stored JSON (`data`, `device`) is embedded verbatim, not
/// parsed into a tree and re-serialized (this is the hottest response of the server).
#[derive(Serialize)]
pub struct SessionView<'a> {
    id: &'a str,
    user_id: Option<&'a str>,
    data: &'a RawValue,
    device: Option<&'a RawValue>,
    created_at: Millis,
    updated_at: Millis,
    last_seen_at: Millis,
    expires_at: Millis,
    idle_expires_at: Millis,
    absolute_expires_at: Millis,
    version: u64,
    origin: &'static str,
    auth_time: Millis,
}

/// Stored JSON text as a raw value (stored text was produced by serde_json, so a failure means
/// corruption; it degrades to `null` rather than failing the whole response).
fn raw(text: &str) -> &RawValue {
    serde_json::from_str(text).unwrap_or_else(|_| {
        tracing::error!("stored JSON is corrupt; answering null");
        RawValue::NULL
    })
}

impl<'a> SessionView<'a> {
    /// The view of a record.
    pub fn of(r: &'a SessionRecord) -> Self {
        SessionView {
            id: &r.id,
            user_id: r.user_id.as_deref(),
            data: raw(&r.data),
            device: r.device.as_deref().map(raw),
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_seen_at: r.last_seen_at,
            expires_at: r.expires_at(),
            idle_expires_at: r.idle_expires_at,
            absolute_expires_at: r.absolute_expires_at,
            version: r.version,
            origin: r.origin.as_str(),
            auth_time: r.auth_time,
        }
    }
}

/// Stored JSON text back to a value (stored text was produced by serde_json, so a failure
/// means corruption; it degrades to `null` rather than failing the whole response).
pub fn raw_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn with_etag(status: StatusCode, r: &SessionRecord) -> Response {
    let mut response = (status, Json(SessionView::of(r))).into_response();
    insert_etag(&mut response, r.version);
    response
}

/// `ETag: "<version>"`, written without `format!` (every session read answers one).
fn insert_etag(response: &mut Response, version: u64) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version).as_bytes();
    let mut quoted = [b'"'; 22];
    quoted[1..=digits.len()].copy_from_slice(digits);
    if let Ok(etag) = HeaderValue::from_bytes(&quoted[..digits.len() + 2]) {
        response
            .headers_mut()
            .insert(axum::http::header::ETAG, etag);
    }
}

/// A create's answer with the new-device signal (`[security]`): the session resource plus
/// `new_device`.
#[derive(Serialize)]
struct Created<'a> {
    #[serde(flatten)]
    session: SessionView<'a>,
    new_device: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    user_id: Option<String>,
    #[serde(default)]
    data: Map<String, Value>,
    idle_ttl_s: Option<u64>,
    absolute_ttl_s: Option<u64>,
    device: Option<Value>,
}

async fn create(
    State(s): State<SessionsState>,
    marked: Option<Extension<RequestOrigin>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<Response> {
    let new = NewSession {
        user_id: body.user_id,
        data: body.data,
        idle_ttl_s: body.idle_ttl_s,
        absolute_ttl_s: body.absolute_ttl_s,
        device: body.device,
        origin: request_origin(marked),
    };
    let created = s
        .sessions
        .create_signalled(new, durability(&headers)?)
        .await?;
    let record = created.record;
    let mut response = match created.new_device {
        None => with_etag(StatusCode::CREATED, &record),
        Some(new_device) => {
            let view = Created {
                session: SessionView::of(&record),
                new_device,
            };
            let mut response = (StatusCode::CREATED, Json(view)).into_response();
            insert_etag(&mut response, record.version);
            response
        }
    };
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sessions/{}", record.id)) {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

async fn read(State(s): State<SessionsState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(with_etag(StatusCode::OK, &s.sessions.get(&id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceBody {
    data: Map<String, Value>,
}

async fn replace(
    State(s): State<SessionsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ReplaceBody>,
) -> ApiResult<Response> {
    let (expected, durability) = write_conditions(&headers)?;
    let record = s
        .sessions
        .update(&id, Update::Replace(body.data), expected, durability)
        .await?;
    Ok(with_etag(StatusCode::OK, &record))
}

async fn patch(
    State(s): State<SessionsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    let data_patch = data_patch(body)?.unwrap_or(Value::Object(Map::new()));
    let (expected, durability) = write_conditions(&headers)?;
    let record = s
        .sessions
        .update(&id, Update::MergePatch(data_patch), expected, durability)
        .await?;
    Ok(with_etag(StatusCode::OK, &record))
}

/// The `data` member of a merge patch of the session resource (`None` when absent); any other
/// member is a 400, as only `data` is writable.
fn data_patch(body: Value) -> ApiResult<Option<Value>> {
    let Value::Object(mut fields) = body else {
        return Err(ApiError::bad_request(
            "a merge patch of a session must be a JSON object",
        ));
    };
    let data = fields.remove("data");
    if let Some(field) = fields.keys().next() {
        return Err(ApiError::bad_request(format!(
            "only `data` can be patched, not `{field}`"
        )));
    }
    if data.as_ref().is_some_and(|d| !d.is_object()) {
        return Err(ApiError::bad_request("`data` must be a JSON object"));
    }
    Ok(data)
}

async fn remove(
    State(s): State<SessionsState>,
    Path(id): Path<String>,
    marked: Option<Extension<RequestOrigin>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (expected, durability) = write_conditions(&headers)?;
    let by = Some(request_origin(marked));
    if s.sessions.delete_by(&id, expected, durability, by).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found("session not found or expired"))
    }
}

/// `POST /v1/sessions/{id}/rotate`, optionally with `{"data": <merge patch>}`.
async fn rotate(
    State(s): State<SessionsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let patch = match body.is_empty() {
        true => None,
        false => data_patch(parse_json(&body)?)?,
    };
    let (expected, durability) = write_conditions(&headers)?;
    let record = s.sessions.rotate(&id, patch, expected, durability).await?;
    Ok(with_etag(StatusCode::OK, &record))
}

/// `POST /v1/sessions/{id}/touch`: extends the idle deadline; 204.
async fn touch(
    State(s): State<SessionsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    s.sessions.touch(&id, durability(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/sessions/{id}/reauth`: the app's backend just re-checked the user's credentials
/// (password, passkey, second factor); 200 with the session, `auth_time` = now.
async fn reauth(
    State(s): State<SessionsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (expected, durability) = write_conditions(&headers)?;
    let record = s.sessions.reauth(&id, expected, durability).await?;
    Ok(with_etag(StatusCode::OK, &record))
}

async fn list_user(
    State(s): State<SessionsState>,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    let sessions: Vec<Value> = s
        .sessions
        .list_user(&user)
        .await?
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "created_at": r.created_at,
                "last_seen_at": r.last_seen_at,
                "expires_at": r.expires_at(),
                "device": r.device.as_deref().map(raw_json),
                "origin": r.origin.as_str(),
            })
        })
        .collect();
    Ok(Json(json!({ "user_id": user, "sessions": sessions })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeQuery {
    except: Option<String>,
}

async fn revoke_user(
    State(s): State<SessionsState>,
    Path(user): Path<String>,
    marked: Option<Extension<RequestOrigin>>,
    query: Result<Query<RevokeQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // `?except=` with nothing after it is a client bug (an unset variable), never "keep no
    // session": revoking everything is what no `except` at all asks for.
    if query
        .except
        .as_deref()
        .is_some_and(|id| id.trim().is_empty())
    {
        return Err(ApiError::bad_request(
            "`except` is empty: name the session to keep, or leave `except` out to revoke every \
             session of the user",
        ));
    }
    let revoked = s
        .sessions
        .revoke_user_by(
            &user,
            query.except.as_deref(),
            durability(&headers)?,
            Some(request_origin(marked)),
        )
        .await?;
    Ok(Json(
        json!({ "user_id": user, "revoked": revoked.len(), "ids": revoked }),
    ))
}

async fn cache_get(
    State(s): State<SessionsState>,
    Path((ns, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    s.cache.check_public_namespace(&ns)?;
    Ok(crate::routes::cache_response(
        s.cache.get(&ns, &key).await?,
        || ApiError::not_found("cache miss").into_response(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CachePutBody {
    data: Value,
    ttl_s: Option<u64>,
}

async fn cache_put(
    State(s): State<SessionsState>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CachePutBody>,
) -> ApiResult<StatusCode> {
    s.cache.check_public_namespace(&ns)?;
    let ttl = body.ttl_s.map_or(Ttl::Default, Ttl::Seconds);
    s.cache
        .put(&ns, &key, &body.data, ttl, durability(&headers)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn cache_delete(
    State(s): State<SessionsState>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    s.cache.check_public_namespace(&ns)?;
    if s.cache.delete(&ns, &key, durability(&headers)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("cache entry not found"))
    }
}

async fn cache_clear(
    State(s): State<SessionsState>,
    Path(ns): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    s.cache.check_public_namespace(&ns)?;
    let cleared = s.cache.clear(&ns, durability(&headers)?).await?;
    Ok(Json(json!({ "namespace": ns, "cleared": cleared })))
}
