//! Seed E: the SessionStore and CalendarCache objects of the Nextcloud calendar migration,
//! wire-compatible, under a configurable prefix (default `/compat/state`).
//!
//! SessionStore: `POST /create`, `GET /get?id=`, `POST /update`, `DELETE /delete?id=`, JSON
//! bodies `{sessionId, session}` / `{session}` / `{success}` with sessions shaped
//! `{id, createdAt, updatedAt, userId?, data}` (unix ms). Sessions are ordinary sessiond
//! sessions with a 1 h idle timeout, so the id a client gets is the id that works everywhere
//! (seed bug E.5-1), expiry is enforced on every read (E.5-2), and create answers 201.
//!
//! CalendarCache: `GET|PUT /calendars`, `/events/<calendarId>`, `/preferences`, and
//! `DELETE /clear`, namespaced per `?userId=` (default `default`, as the seed), with the seed's
//! TTLs (5 min, 5 min, 1 day) and `X-Cache: HIT|MISS` + `X-Cache-Age`. Each user's entries live
//! in their own namespace, so `clear` for user `a` can never touch `ab` (E.5-4). Malformed JSON
//! is a 400 (E.5-6). Errors keep the seed's `{error: "<message>"}` shape.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};
use sessiond_http::body::parse_json;
use sessiond_http::{ApiError, RawBody};
use sessiond_store::SessionRecord;

use crate::cache::Ttl;
use crate::routes::{cache_response, durability, request_origin, RequestOrigin, SessionsState};
use crate::service::{NewSession, Update};

/// Idle timeout of SessionStore sessions (seed: 1 hour).
pub const SESSION_IDLE_TTL_S: u64 = 3600;
/// TTL of calendars and events (seed: 5 minutes).
pub const CALENDAR_TTL_S: u64 = 300;
/// TTL of preferences (seed: 1 day).
pub const PREFERENCES_TTL_S: u64 = 86_400;

/// The routes, relative to the prefix.
pub fn router() -> Router<SessionsState> {
    Router::new()
        .route("/create", post(create))
        .route("/get", get(read))
        .route("/update", post(update))
        .route("/delete", axum::routing::delete(remove))
        .route("/calendars", get(calendars_get).put(calendars_put))
        .route("/events/", get(events_get_empty).put(events_put_empty))
        .route("/events/{*rest}", get(events_get).put(events_put))
        .route("/preferences", get(preferences_get).put(preferences_put))
        .route("/clear", axum::routing::delete(clear))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
}

type Params = Query<HashMap<String, String>>;
type Body = Result<RawBody, ApiError>;

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "text/plain;charset=UTF-8")],
        "Not found",
    )
        .into_response()
}

/// The seed's error shape: `{"error": "<message>"}`.
fn error(err: ApiError) -> Response {
    (err.status, Json(json!({ "error": err.message }))).into_response()
}

fn seed_session(r: &SessionRecord) -> Value {
    let mut session = json!({
        "id": r.id,
        "createdAt": r.created_at,
        "updatedAt": r.last_seen_at.max(r.updated_at),
        "data": crate::routes::native::raw_json(&r.data),
    });
    if let (Some(user), Some(obj)) = (&r.user_id, session.as_object_mut()) {
        obj.insert("userId".into(), json!(user));
    }
    session
}

fn session_id(params: &HashMap<String, String>) -> Result<&str, ApiError> {
    params
        .get("id")
        .map(String::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::bad_request("Session ID required"))
}

fn object_field(
    fields: &mut Map<String, Value>,
    name: &str,
) -> Result<Map<String, Value>, ApiError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(ApiError::bad_request(format!(
            "`{name}` must be a JSON object"
        ))),
    }
}

async fn create(
    State(s): State<SessionsState>,
    marked: Option<Extension<RequestOrigin>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let RawBody(bytes) = body?;
        let mut fields: Map<String, Value> = parse_json(&bytes)?;
        let user_id = match fields.remove("userId") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => Some(u),
            Some(_) => return Err(ApiError::bad_request("`userId` must be a string")),
        };
        let data = object_field(&mut fields, "data")?;
        let new = NewSession {
            user_id,
            data,
            idle_ttl_s: Some(SESSION_IDLE_TTL_S),
            origin: request_origin(marked),
            ..NewSession::default()
        };
        s.sessions.create(new, durability(&headers)?).await
    };
    match result.await {
        Ok(r) => (
            StatusCode::CREATED,
            Json(json!({ "sessionId": r.id, "session": seed_session(&r) })),
        )
            .into_response(),
        Err(err) => error(err),
    }
}

async fn read(State(s): State<SessionsState>, Query(params): Params) -> Response {
    let result = async { s.sessions.get(session_id(&params)?).await };
    match result.await {
        Ok(r) => Json(json!({ "session": seed_session(&r) })).into_response(),
        Err(err) if err.status == StatusCode::NOT_FOUND => {
            error(ApiError::not_found("Session not found"))
        }
        Err(err) => error(err),
    }
}

async fn update(State(s): State<SessionsState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let RawBody(bytes) = body?;
        let mut fields: Map<String, Value> = parse_json(&bytes)?;
        let id = match fields.remove("sessionId") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => return Err(ApiError::bad_request("Session ID required")),
        };
        let data = object_field(&mut fields, "data")?;
        s.sessions
            .update(&id, Update::Shallow(data), None, durability(&headers)?)
            .await
    };
    match result.await {
        Ok(r) => Json(json!({ "session": seed_session(&r) })).into_response(),
        Err(err) if err.status == StatusCode::NOT_FOUND => {
            error(ApiError::not_found("Session not found"))
        }
        Err(err) => error(err),
    }
}

async fn remove(
    State(s): State<SessionsState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let result = async {
        s.sessions
            .delete(session_id(&params)?, None, durability(&headers)?)
            .await
    };
    match result.await {
        Ok(success) => Json(json!({ "success": success })).into_response(),
        Err(err) => error(err),
    }
}

/// The per-user namespace of the CalendarCache (reserved `_` prefix).
fn namespace(params: &HashMap<String, String>) -> String {
    let user = params
        .get("userId")
        .map(String::as_str)
        .filter(|u| !u.is_empty())
        .unwrap_or("default");
    format!("_state/{user}")
}

async fn cache_read(s: &SessionsState, params: &HashMap<String, String>, key: &str) -> Response {
    match s.cache.get(&namespace(params), key).await {
        Ok(hit) => cache_response(hit, || error(ApiError::not_found("Cache miss"))),
        Err(err) => error(err),
    }
}

async fn cache_write(
    s: &SessionsState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    key: &str,
    ttl_s: u64,
    body: Body,
) -> Response {
    let result = async {
        let RawBody(bytes) = body?;
        let value: Value = parse_json(&bytes)?;
        s.cache
            .put(
                &namespace(params),
                key,
                &value,
                Ttl::Seconds(ttl_s),
                durability(headers)?,
            )
            .await
    };
    match result.await {
        Ok(()) => Json(json!({ "success": true })).into_response(),
        Err(err) => error(err),
    }
}

/// The seed takes the path segment after `/events/`; extra segments are ignored.
fn event_key(rest: &str) -> String {
    format!("events:{}", rest.split('/').next().unwrap_or(""))
}

async fn calendars_get(State(s): State<SessionsState>, Query(p): Params) -> Response {
    cache_read(&s, &p, "calendars").await
}

async fn calendars_put(
    State(s): State<SessionsState>,
    Query(p): Params,
    h: HeaderMap,
    body: Body,
) -> Response {
    cache_write(&s, &p, &h, "calendars", CALENDAR_TTL_S, body).await
}

async fn events_get(
    State(s): State<SessionsState>,
    Path(rest): Path<String>,
    Query(p): Params,
) -> Response {
    cache_read(&s, &p, &event_key(&rest)).await
}

async fn events_put(
    State(s): State<SessionsState>,
    Path(rest): Path<String>,
    Query(p): Params,
    h: HeaderMap,
    body: Body,
) -> Response {
    cache_write(&s, &p, &h, &event_key(&rest), CALENDAR_TTL_S, body).await
}

async fn events_get_empty(State(s): State<SessionsState>, Query(p): Params) -> Response {
    cache_read(&s, &p, &event_key("")).await
}

async fn events_put_empty(
    State(s): State<SessionsState>,
    Query(p): Params,
    h: HeaderMap,
    body: Body,
) -> Response {
    cache_write(&s, &p, &h, &event_key(""), CALENDAR_TTL_S, body).await
}

async fn preferences_get(State(s): State<SessionsState>, Query(p): Params) -> Response {
    cache_read(&s, &p, "preferences").await
}

async fn preferences_put(
    State(s): State<SessionsState>,
    Query(p): Params,
    h: HeaderMap,
    body: Body,
) -> Response {
    cache_write(&s, &p, &h, "preferences", PREFERENCES_TTL_S, body).await
}

async fn clear(State(s): State<SessionsState>, Query(p): Params, headers: HeaderMap) -> Response {
    let result = async { s.cache.clear(&namespace(&p), durability(&headers)?).await };
    match result.await {
        Ok(n) => Json(json!({ "success": true, "clearedEntries": n })).into_response(),
        Err(err) => error(err),
    }
}
