//! Seed C's user-session protocol, wire-compatible: the WebSocket messages of §C.3 and the
//! three HTTP endpoints its README documents (`/state`, `/clear`, `/notify`).
//!
//! Kept from the seed: every message name, field name and to-all vs to-sender rule, the
//! `initial_state` on accept, `{"type":"error","message":"Failed to process message"}` for a
//! frame that is not a JSON object, and the close reason `Logged out from all devices`.
//! Fixed: the socket belongs to an authenticated user; a duplicate `join_game` is acknowledged
//! to its sender (`alreadyJoined: true`) instead of ignored; `leave_game` of a game not joined
//! answers only its sender (`notJoined: true`) instead of broadcasting a non-change; presence
//! values are validated; a bad message gets an `error` naming the problem; `ping` is answered
//! from memory and writes nothing; `logout_all` also revokes the user's sessions.

use std::sync::Arc;

use axum::extract::ws::{Utf8Bytes, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond_http::{ApiError, ApiResult, JsonBody};
use sessiond_store::now_ms;

use crate::auth::{acting_user, identify, require_service, Accept};
use crate::conn::Conn;
use crate::hub::{error_frame, frame, Hub};
use crate::socket::Protocol;
use crate::state::Presence;
use crate::upgrade::{upgrade_error, PeerIp, WsUpgrade};
use crate::v1::{connect_info, ConnectQuery};

/// Seed C's generic failure message.
pub const FAILED: &str = "Failed to process message";

/// Query of every seed route.
#[derive(Debug, Default, Deserialize)]
pub struct SeedQuery {
    #[serde(rename = "userId")]
    user_id: Option<String>,
    #[serde(rename = "deviceId")]
    device_id: Option<String>,
    token: Option<String>,
}

/// The seed routes, mounted at `config.seed_path`.
pub fn router(hub: &Hub) -> Router<Hub> {
    let base = hub.config().seed_path.clone();
    Router::new()
        .route(&base, get(connect))
        .route(&format!("{base}/state"), get(http_state))
        .route(&format!("{base}/clear"), post(http_clear))
        .route(&format!("{base}/notify"), post(http_notify))
}

async fn connect(
    State(hub): State<Hub>,
    query: Result<Query<SeedQuery>, axum::extract::rejection::QueryRejection>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    ws: WsUpgrade,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let query = ConnectQuery {
        user_id: query.user_id,
        device_id: query.device_id,
        token: query.token,
        ..ConnectQuery::default()
    };
    let info = connect_info(&hub, &query, &headers, ip, "seed").await?;
    let ws: WebSocketUpgrade = ws.0.map_err(upgrade_error)?;
    let connected = hub
        .connect(info, |state, conn| {
            Some(frame(&state.initial_state(&conn.device_id)))
        })
        .await;
    let (conn, rx) = match connected {
        Ok(connected) => connected,
        Err(e) => return crate::socket::refuse_at_cap(ws, e),
    };
    Ok(crate::upgrade::accept(hub, conn, rx, ws, SeedProtocol))
}

/// Seed C's message handling.
pub struct SeedProtocol;

impl Protocol for SeedProtocol {
    async fn on_text(&mut self, hub: &Hub, conn: &Arc<Conn>, text: Utf8Bytes) {
        let message: Value = match serde_json::from_str(text.as_str()) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                conn.send(error_frame(FAILED));
                return;
            }
        };
        if let Err(e) = handle(hub, conn, &message).await {
            let text = if e.status.is_server_error() {
                FAILED
            } else {
                e.message.as_str()
            };
            conn.send(error_frame(text));
        }
    }

    fn on_binary(&mut self, _hub: &Hub, conn: &Arc<Conn>) {
        conn.send(error_frame(FAILED));
    }
}

/// A required string field of a message.
fn field<'a>(hub: &Hub, message: &'a Value, name: &str) -> ApiResult<&'a str> {
    let value = message[name]
        .as_str()
        .ok_or_else(|| ApiError::bad_request(format!("{name} must be a string")))?;
    hub.check_id(name, value)?;
    Ok(value)
}

async fn handle(hub: &Hub, conn: &Arc<Conn>, message: &Value) -> ApiResult<()> {
    let user = &*conn.user_id;
    let kind = message["type"].as_str().unwrap_or("");
    if kind != "ping" {
        conn.mark_active();
    }
    match kind {
        "ping" => {
            conn.send(Utf8Bytes::from_static(r#"{"type":"pong"}"#));
        }
        // An extension of the seed protocol (issue 19): the answer to `session_expiring`.
        "extend_session" => {
            let deadlines = hub.extend_session(conn).await?;
            conn.send(frame(
                &json!({"type": "session_extended", "idleExpiresAt": deadlines.idle}),
            ));
        }
        "sync_state" => {
            let (guard, state) = hub.open(user).await?;
            drop(guard);
            conn.send(frame(&state.state_frame()));
        }
        "join_game" => {
            let game = field(hub, message, "gameId")?;
            join_game(hub, conn, game).await?;
        }
        "leave_game" => {
            let game = field(hub, message, "gameId")?;
            leave_game(hub, conn, game).await?;
        }
        "update_presence" => {
            let presence = message["presence"]
                .as_str()
                .and_then(Presence::parse)
                .ok_or_else(|| {
                    ApiError::bad_request("presence must be one of online, away, offline")
                })?;
            let (mut guard, mut state) = hub.open(user).await?;
            state.presence = presence;
            state.last_active = Some(now_ms());
            Hub::save(&mut guard, state).await?;
            hub.broadcast(
                user,
                &json!({"type": "presence_updated", "presence": presence}),
            );
        }
        "logout_all" => {
            hub.logout_all(user).await?;
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown message type `{other}`"
            )))
        }
    }
    Ok(())
}

async fn join_game(hub: &Hub, conn: &Arc<Conn>, game: &str) -> ApiResult<()> {
    let user = &*conn.user_id;
    let (mut guard, mut state) = hub.open(user).await?;
    if state.active_games.iter().any(|g| g == game) {
        conn.send(frame(&json!({
            "type": "game_joined", "gameId": game, "activeGames": state.active_games,
            "alreadyJoined": true,
        })));
        return Ok(());
    }
    let max = hub.config().max_active_games;
    if state.active_games.len() >= max {
        return Err(ApiError::limit(format!(
            "activeGames is full ({max} games); leave one first"
        )));
    }
    state.active_games.push(game.to_string());
    state.last_active = Some(now_ms());
    let reply = json!({"type": "game_joined", "gameId": game, "activeGames": state.active_games});
    Hub::save(&mut guard, state).await?;
    hub.broadcast(user, &reply);
    Ok(())
}

async fn leave_game(hub: &Hub, conn: &Arc<Conn>, game: &str) -> ApiResult<()> {
    let user = &*conn.user_id;
    let (mut guard, mut state) = hub.open(user).await?;
    let before = state.active_games.len();
    state.active_games.retain(|g| g != game);
    if state.active_games.len() == before {
        conn.send(frame(&json!({
            "type": "game_left", "gameId": game, "activeGames": state.active_games,
            "notJoined": true,
        })));
        return Ok(());
    }
    state.last_active = Some(now_ms());
    let reply = json!({"type": "game_left", "gameId": game, "activeGames": state.active_games});
    Hub::save(&mut guard, state).await?;
    hub.broadcast(user, &reply);
    Ok(())
}

/// The user named by a service call's `userId`.
async fn service_user(hub: &Hub, headers: &HeaderMap, query: &SeedQuery) -> ApiResult<String> {
    let caller = identify(
        hub.keys(),
        hub.authority(),
        headers,
        None,
        &[],
        Accept::Http,
    )
    .await?;
    require_service(&caller)?;
    let user = acting_user(&caller, query.user_id.as_deref())?;
    hub.check_id("userId", &user)?;
    Ok(user)
}

async fn http_state(
    State(hub): State<Hub>,
    Query(query): Query<SeedQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let user = service_user(&hub, &headers, &query).await?;
    Ok(Json(hub.http_state(&user).await?))
}

async fn http_clear(
    State(hub): State<Hub>,
    Query(query): Query<SeedQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let user = service_user(&hub, &headers, &query).await?;
    let closed = hub.clear(&user).await?;
    Ok(Json(json!({"success": true, "closedSockets": closed})))
}

async fn http_notify(
    State(hub): State<Hub>,
    Query(query): Query<SeedQuery>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    let user = service_user(&hub, &headers, &query).await?;
    if body["type"] != "notification" || body.get("message").is_none() {
        return Err(ApiError::bad_request(
            "body must be {\"type\":\"notification\",\"message\":…}",
        ));
    }
    let text = body.to_string();
    if text.len() > hub.config().max_message_bytes {
        return Err(ApiError::too_large(format!(
            "notification is above realtime.max_message_bytes ({})",
            hub.config().max_message_bytes
        )));
    }
    let delivered = hub.broadcast(&user, &body);
    Ok(Json(json!({"success": true, "delivered": delivered})).into_response())
}
