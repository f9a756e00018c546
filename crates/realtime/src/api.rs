//! The server API under `/v1/realtime` (service key): publish, grants, connections, send to a
//! user, channel presence, stats (docs/realtime.md §3).
//!
//! These are the calls an app backend makes: it decides who may join a room, pushes to
//! users and rooms, and disconnects devices. `GET /v1/realtime/stats` also makes idle
//! eviction observable (resident user objects).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond_http::{ApiError, ApiResult, JsonBody};
use sessiond_store::now_ms;

use crate::auth::{identify, require_service, Accept};
use crate::cluster::Action;
use crate::grants::{self, GrantClaims};
use crate::hub::Hub;
use crate::state::Grant;
use crate::v1::channel_access;

/// Close code and reason of a server-API disconnect.
pub const DISCONNECTED_CLOSE: (u16, &str) = (4003, "Disconnected by server");

/// The server API routes.
pub fn router() -> Router<Hub> {
    Router::new()
        .route("/v1/realtime/stats", get(stats))
        .route("/v1/realtime/publish", post(publish))
        .route("/v1/realtime/grants", post(grant).delete(revoke_grant))
        .route("/v1/realtime/grant-tokens", post(grant_token))
        .route(
            "/v1/realtime/users/{user}/connections",
            get(connections).delete(disconnect_user),
        )
        .route("/v1/realtime/connections/{id}", delete(disconnect_one))
        .route("/v1/realtime/users/{user}/send", post(send_to_user))
        .route("/v1/realtime/channels/{channel}/presence", get(presence))
}

/// 401/403 unless the request carries a service key (or the server is in open mode).
pub async fn service(hub: &Hub, headers: &HeaderMap) -> ApiResult<()> {
    let caller = identify(
        hub.keys(),
        hub.authority(),
        headers,
        None,
        &[],
        Accept::Http,
    )
    .await?;
    require_service(&caller)
}

/// Route layer of the service APIs: [`service`] from the headers alone, before extractors.
pub async fn require_service_layer(
    State(hub): State<Hub>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match service(&hub, request.headers()).await {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// Refuses a payload above the message size limit (413).
fn check_size(hub: &Hub, data: &Value) -> ApiResult<()> {
    let max = hub.config().max_message_bytes;
    if data.to_string().len() > max {
        return Err(ApiError::too_large(format!(
            "data is above realtime.max_message_bytes ({max})"
        )));
    }
    Ok(())
}

/// Every figure is this node's (on several nodes, ask each node).
async fn stats(State(hub): State<Hub>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    service(&hub, &headers).await?;
    Ok(Json(json!({
        "resident_users": hub.resident_users(),
        "connections": hub.connections(),
        "channels": hub.channels().len(),
        "history_bytes": hub.channels().history_bytes(),
        "presence_bytes": hub.channels().presence_bytes(),
    })))
}

/// `data` is required (an explicit `null` is a message; a forgotten field is a 400).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    data: Value,
}

async fn publish(
    State(hub): State<Hub>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PublishBody>,
) -> ApiResult<Json<Value>> {
    service(&hub, &headers).await?;
    channel_access(&hub, "", true, &body.channel, None).await?;
    check_size(&hub, &body.data)?;
    let (offset, _) = hub.inner.publish(&body.channel, &body.data, None).await?;
    Ok(Json(json!({"channel": body.channel, "offset": offset})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    user_id: String,
    channel: String,
    #[serde(default)]
    publish: bool,
    ttl_s: Option<u64>,
}

fn room_only(channel: &str) -> ApiResult<()> {
    if !channel.starts_with("room:") || channel.len() <= "room:".len() {
        return Err(ApiError::bad_request("grants are for room:<name> channels"));
    }
    Ok(())
}

async fn grant(
    State(hub): State<Hub>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<GrantBody>,
) -> ApiResult<Response> {
    service(&hub, &headers).await?;
    hub.check_id("user_id", &body.user_id)?;
    hub.check_id("channel", &body.channel)?;
    room_only(&body.channel)?;
    let expires_at = body.ttl_s.map(|s| {
        now_ms().saturating_add(
            i64::try_from(s)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(1000),
        )
    });
    let (mut guard, mut state) = hub.open(&body.user_id).await?;
    let now = now_ms();
    state.grants.retain(|_, g| g.is_live(now));
    let max = hub.config().max_grants_per_user;
    if !state.grants.contains_key(&body.channel) && state.grants.len() >= max {
        return Err(ApiError::limit(format!("user already holds {max} grants")));
    }
    state.grants.insert(
        body.channel.clone(),
        Grant {
            publish: body.publish,
            expires_at,
        },
    );
    Hub::save(&mut guard, state).await?;
    drop(guard);
    // Live subscriptions of the channel now hold under the renewed grant.
    hub.act_everywhere(Action::Grant {
        user: body.user_id.clone(),
        channel: body.channel.clone(),
        grant: Some((body.publish, expires_at)),
    });
    grant_event(
        &hub,
        "grant.issued",
        &body.user_id,
        &body.channel,
        Some(expires_at),
    );
    let reply = json!({
        "user_id": body.user_id, "channel": body.channel, "publish": body.publish,
        "expires_at": expires_at,
    });
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

#[derive(Deserialize)]
struct GrantQuery {
    user_id: String,
    channel: String,
}

async fn revoke_grant(
    State(hub): State<Hub>,
    headers: HeaderMap,
    q: Result<Query<GrantQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<StatusCode> {
    service(&hub, &headers).await?;
    // A missing field is the JSON 400 of every API (axum's own rejection is plain text).
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    hub.check_id("user_id", &q.user_id)?;
    hub.check_id("channel", &q.channel)?;
    let (mut guard, mut state) = hub.open(&q.user_id).await?;
    state.grants.remove(&q.channel);
    // Signed grants issued until now are void too, also after a restart.
    let max = hub.config().max_grants_per_user;
    state.record_revocation(&q.channel, now_ms() / 1000, max);
    Hub::save(&mut guard, state).await?;
    drop(guard);
    // Every live subscription of the user to the channel ends, however it was allowed (the
    // app wants the user out); service-key sockets never needed a grant and stay.
    hub.act_everywhere(Action::Grant {
        user: q.user_id.clone(),
        channel: q.channel.clone(),
        grant: None,
    });
    grant_event(&hub, "grant.revoked", &q.user_id, &q.channel, None);
    Ok(StatusCode::NO_CONTENT)
}

/// Records a grant change as a security event of the user.
fn grant_event(
    hub: &Hub,
    kind: &'static str,
    user: &str,
    channel: &str,
    expires: Option<Option<i64>>,
) {
    let mut details = serde_json::Map::new();
    details.insert("channel".into(), channel.into());
    if let Some(expires_at) = expires {
        details.insert("expires_at".into(), expires_at.into());
    }
    hub.inner
        .authority
        .security_event(crate::auth::SecurityNote {
            kind,
            user_id: Some(user.to_string()),
            session_id: None,
            details,
        });
}

async fn grant_token(
    State(hub): State<Hub>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<GrantBody>,
) -> ApiResult<Json<Value>> {
    service(&hub, &headers).await?;
    hub.check_id("user_id", &body.user_id)?;
    room_only(&body.channel)?;
    let key = hub
        .config()
        .grant_keys
        .first()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::conflict("no realtime.grant_keys configured"))?;
    let ttl = i64::try_from(body.ttl_s.unwrap_or(600)).unwrap_or(i64::MAX / 2);
    let now_s = now_ms() / 1000;
    let exp = now_s.saturating_add(ttl);
    let claims = GrantClaims {
        sub: body.user_id,
        ch: body.channel,
        publish: body.publish,
        iat: now_s,
        exp,
    };
    Ok(Json(
        json!({"token": grants::sign(key.as_bytes(), &claims), "expires_at": exp}),
    ))
}

async fn connections(
    State(hub): State<Hub>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    service(&hub, &headers).await?;
    hub.check_id("user id", &user)?;
    let list = hub.inner.describe_connections(&user).await?;
    Ok(Json(json!({ "user_id": user, "connections": list })))
}

async fn disconnect_user(
    State(hub): State<Hub>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    service(&hub, &headers).await?;
    hub.check_id("user id", &user)?;
    let (code, reason) = DISCONNECTED_CLOSE;
    let closed = hub.act_everywhere(Action::Close {
        user: user.clone(),
        code,
        reason: reason.to_string(),
    });
    Ok(Json(json!({"closed": closed})))
}

async fn disconnect_one(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    service(&hub, &headers).await?;
    let (code, reason) = DISCONNECTED_CLOSE;
    if !hub.inner.close_anywhere(&id, code, reason).await? {
        return Err(ApiError::not_found("no such open connection"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    data: Value,
}

async fn send_to_user(
    State(hub): State<Hub>,
    Path(user): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SendBody>,
) -> ApiResult<Json<Value>> {
    service(&hub, &headers).await?;
    hub.check_id("user id", &user)?;
    check_size(&hub, &body.data)?;
    let (offset, on_channel) = hub
        .inner
        .publish(&format!("user:{user}"), &body.data, None)
        .await?;
    let seed = hub.act_everywhere(Action::Frame {
        user: user.clone(),
        frame: body.data.to_string(),
        seed_only: true,
    });
    Ok(Json(
        json!({"offset": offset, "delivered": on_channel + seed}),
    ))
}

async fn presence(
    State(hub): State<Hub>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    service(&hub, &headers).await?;
    hub.check_id("channel", &channel)?;
    let presence = match hub.inner.cluster_presence(&channel).await? {
        Some(presence) => presence,
        None => hub
            .channels()
            .get(&channel)
            .map_or_else(|| json!({}), |c| c.presence()),
    };
    Ok(Json(json!({"channel": channel, "presence": presence})))
}
