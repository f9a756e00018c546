//! The v1 protocol at `/v1/realtime`: channels with authorization, presence metas, offsets and
//! recovery (docs/realtime.md §2).
//!
//! The socket side only parses frames and checks who may do what; ordering, offsets, history
//! and presence live in [`crate::channels`], under each channel's lock.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sessiond_http::{ApiError, ApiResult};
use sessiond_store::{now_ms, Millis};

use crate::auth::{acting_user, identify, Accept, Caller};
use crate::channels::Since;
use crate::conn::{lock, Conn, ConnInfo};
use crate::grants;
use crate::hub::{frame, Hub};
use crate::socket::Protocol;
use crate::upgrade::{upgrade_error, PeerIp, WsUpgrade};

/// Query of `/v1/realtime` (and the SSE route).
#[derive(Debug, Default, Deserialize)]
pub struct ConnectQuery {
    #[serde(rename = "userId")]
    pub(crate) user_id: Option<String>,
    #[serde(rename = "deviceId")]
    pub(crate) device_id: Option<String>,
    pub(crate) token: Option<String>,
    /// SSE only: comma-separated channels.
    pub(crate) channels: Option<String>,
    /// SSE only: recovery position (as the `id:` of a message event).
    pub(crate) since: Option<String>,
}

/// The v1 socket route.
pub fn router() -> Router<Hub> {
    Router::new().route("/v1/realtime", get(connect))
}

/// Authenticates a connect request (socket or SSE) and describes the connection.
pub(crate) async fn connect_info(
    hub: &Hub,
    query: &ConnectQuery,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
    protocol: &'static str,
) -> ApiResult<ConnInfo> {
    let caller = identify(
        hub.keys(),
        hub.authority(),
        headers,
        query.token.as_deref(),
        &hub.config().cookies,
        Accept::Socket {
            middleware_cookie: hub.config().middleware_clients,
            allowed_origins: &hub.config().allowed_origins,
        },
    )
    .await?;
    let user = acting_user(&caller, query.user_id.as_deref())?;
    hub.check_id("userId", &user)?;
    let device = query
        .device_id
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "unknown".into());
    hub.check_id("deviceId", &device)?;
    let service = caller == Caller::Service;
    let (session_id, deadlines) = match caller {
        Caller::User(user) => (user.session_id, user.deadlines),
        Caller::Service => (None, None),
    };
    let max = hub.config().max_id_bytes;
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .filter(|ua| !ua.is_empty())
        .map(|ua| cut(ua, max).to_string());
    Ok(ConnInfo {
        user_id: user,
        device_id: device,
        service,
        session_id,
        ip,
        connected_at: now_ms(),
        protocol,
        user_agent,
        deadlines,
    })
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

async fn connect(
    State(hub): State<Hub>,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    ws: WsUpgrade,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let info = connect_info(&hub, &query, &headers, ip, "v1").await?;
    let ws = ws.0.map_err(upgrade_error)?;
    let ping_ms = hub.config().ping_interval_s * 1000;
    let connected = hub
        .connect(info, |_, conn| {
            Some(frame(&json!({
                "type": "connected", "v": 1, "connId": conn.id.to_string(),
                "userId": &*conn.user_id, "deviceId": &*conn.device_id,
                "pingIntervalMs": ping_ms,
            })))
        })
        .await;
    let (conn, rx) = match connected {
        Ok(connected) => connected,
        Err(e) => return crate::socket::refuse_at_cap(ws, e),
    };
    Ok(crate::upgrade::accept(hub, conn, rx, ws, V1Protocol))
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// What a subscriber may do in a channel, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// May publish from a client.
    pub publish: bool,
    /// When the grant that allows it runs out (unix ms); `None` = never.
    pub expires_at: Option<Millis>,
}

impl Access {
    const FOREVER: Access = Access {
        publish: true,
        expires_at: None,
    };
}

/// Whether `user` may subscribe to `channel`, whether they may publish on it, and until when.
/// Service callers may do both anywhere, forever.
pub async fn channel_access(
    hub: &Hub,
    user: &str,
    service: bool,
    channel: &str,
    grant: Option<&str>,
) -> ApiResult<Access> {
    hub.check_id("channel", channel)?;
    let Some((namespace, name)) = channel.split_once(':') else {
        return Err(ApiError::bad_request(
            "channel must be `<namespace>:<name>` (user:… or room:…)",
        ));
    };
    if name.is_empty() {
        return Err(ApiError::bad_request("channel name must not be empty"));
    }
    if service {
        return Ok(Access::FOREVER);
    }
    match namespace {
        "user" if name == user => Ok(Access::FOREVER),
        "user" => Err(forbidden("user channels are private to their user")),
        "room" => {
            if let Some(token) = grant {
                let claims = grants::verify(&hub.config().grant_keys, token, now_ms() / 1000)
                    .filter(|c| c.sub == user && c.ch == channel)
                    .ok_or_else(|| forbidden("invalid, expired or foreign grant"))?;
                let (guard, state) = hub.open(user).await?;
                drop(guard);
                if grants::revoked(claims.iat, state.grant_revocations.get(channel).copied()) {
                    return Err(forbidden(
                        "this grant was issued before the user's grant of the channel was revoked",
                    ));
                }
                return Ok(Access {
                    publish: claims.publish,
                    expires_at: Some(claims.exp.saturating_mul(1000)),
                });
            }
            let (guard, state) = hub.open(user).await?;
            drop(guard);
            match state.grants.get(channel) {
                Some(g) if g.is_live(now_ms()) => Ok(Access {
                    publish: g.publish,
                    expires_at: g.expires_at,
                }),
                _ => Err(forbidden(format!("no grant for {channel}"))),
            }
        }
        _ => Err(forbidden(format!(
            "unknown channel namespace `{namespace}`"
        ))),
    }
}

/// v1 message handling (a socket's rights per channel live on its [`Conn`]).
#[derive(Default)]
pub struct V1Protocol;

fn with_id(mut reply: Value, id: &Value) -> Utf8Bytes {
    if !id.is_null() {
        reply["id"] = id.clone();
    }
    frame(&reply)
}

fn channel_field(message: &Value) -> ApiResult<&str> {
    message["channel"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("channel must be a string"))
}

/// The optional presence meta of a frame (an object, bounded by the message size).
fn meta_field(message: &Value) -> ApiResult<Option<&Map<String, Value>>> {
    match message.get("meta") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(meta)) => Ok(Some(meta)),
        Some(_) => Err(ApiError::bad_request("meta must be a JSON object")),
    }
}

impl Protocol for V1Protocol {
    async fn on_text(&mut self, hub: &Hub, conn: &Arc<Conn>, text: Utf8Bytes) {
        let message: Value = match serde_json::from_str(text.as_str()) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                conn.send(frame(&json!({
                    "type": "error", "code": "bad_request",
                    "message": "frames must be JSON objects",
                })));
                return;
            }
        };
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        if let Err(e) = self.handle(hub, conn, &message, &id).await {
            let text = if e.status.is_server_error() {
                "internal server error".to_string()
            } else {
                e.message
            };
            conn.send(with_id(
                json!({"type": "error", "code": e.code, "message": text}),
                &id,
            ));
        }
    }

    fn on_binary(&mut self, _hub: &Hub, conn: &Arc<Conn>) {
        conn.send(frame(&json!({
            "type": "error", "code": "bad_request", "message": "binary frames are not supported",
        })));
    }
}

impl V1Protocol {
    async fn handle(
        &mut self,
        hub: &Hub,
        conn: &Arc<Conn>,
        message: &Value,
        id: &Value,
    ) -> ApiResult<()> {
        let kind = message["type"].as_str().unwrap_or("");
        if kind != "ping" {
            conn.mark_active();
        }
        match kind {
            "ping" => {
                conn.send(with_id(json!({"type": "pong"}), id));
            }
            "subscribe" => self.subscribe(hub, conn, message, id).await?,
            "extend_session" => {
                let deadlines = hub.extend_session(conn).await?;
                conn.send(with_id(
                    json!({"type": "session_extended", "idle_expires_at": deadlines.idle}),
                    id,
                ));
            }
            "unsubscribe" => {
                let name = channel_field(message)?;
                if let Some(channel) = conn.forget_subscription(name) {
                    channel.unsubscribe(conn);
                }
                conn.send(with_id(
                    json!({"type": "unsubscribed", "channel": name}),
                    id,
                ));
            }
            "publish" => {
                let name = channel_field(message)?;
                hub.channels()
                    .get(name)
                    .filter(|c| c.has(conn))
                    .ok_or_else(|| forbidden(format!("subscribe to {name} before publishing")))?;
                if !conn.subscription(name).is_some_and(|(publish, _)| publish) {
                    return Err(forbidden(format!("no publish right on {name}")));
                }
                let data = message.get("data").cloned().unwrap_or(Value::Null);
                let (offset, _) = hub.inner.publish(name, &data, Some(&conn.user_id)).await?;
                conn.send(with_id(
                    json!({"type": "published", "channel": name, "offset": offset}),
                    id,
                ));
            }
            "presence_update" => {
                let name = channel_field(message)?;
                let meta = meta_field(message)?;
                let updated = match hub.channels().get(name) {
                    Some(channel) => channel.update_meta(conn, meta)?,
                    None => false,
                };
                if !updated {
                    return Err(ApiError::not_found(format!("not subscribed to {name}")));
                }
                hub.inner.presence_flushed().await;
                conn.send(with_id(
                    json!({"type": "presence_updated", "channel": name}),
                    id,
                ));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown message type `{other}`"
                )))
            }
        }
        Ok(())
    }

    async fn subscribe(
        &mut self,
        hub: &Hub,
        conn: &Arc<Conn>,
        message: &Value,
        id: &Value,
    ) -> ApiResult<()> {
        let name = channel_field(message)?;
        let since: Option<Since> = match message.get("since") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| {
                ApiError::bad_request("since must be {\"epoch\": string, \"offset\": number}")
            })?),
        };
        let meta = meta_field(message)?;
        let grant = message["grant"].as_str();
        let access = channel_access(hub, &conn.user_id, conn.is_service(), name, grant).await?;
        hub.inner.prepare_channel(name).await?;
        subscribe_conn(hub, conn, name, access, id, since.as_ref(), meta)?;
        // The reply goes out once the join is visible on every node.
        hub.inner.presence_flushed().await;
        Ok(())
    }
}

/// Subscribes `conn` to `name` with the rights `access` grants (already checked), within the
/// per-socket limit. Subscribing again replaces the rights (a fresh grant extends the
/// subscription).
pub(crate) fn subscribe_conn(
    hub: &Hub,
    conn: &Arc<Conn>,
    name: &str,
    access: Access,
    id: &Value,
    since: Option<&Since>,
    meta: Option<&Map<String, Value>>,
) -> ApiResult<()> {
    let max = hub.config().max_subscriptions_per_socket;
    let count = lock(&conn.subscriptions).len();
    if conn.subscription(name).is_none() && count >= max {
        return Err(ApiError::limit(format!(
            "at most {max} subscriptions per socket"
        )));
    }
    let channel = hub.channels().get_or_create(name);
    // Rights first: a message published right after the subscribe may already be answered.
    let previous = conn.subscription(name);
    conn.record_subscription(channel.clone(), access.publish, access.expires_at);
    if let Err(e) = channel.subscribe(conn, id, since, meta) {
        // Refused by a presence budget: leave the socket's rights as they were.
        match previous {
            Some((publish, expires_at)) => conn.renew_subscription(name, publish, expires_at),
            None => {
                conn.forget_subscription(name);
            }
        }
        return Err(e);
    }
    Ok(())
}
