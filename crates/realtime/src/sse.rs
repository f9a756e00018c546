//! SSE fallback `GET /v1/realtime/sse` for networks that block WebSockets (docs/realtime.md
//! §5): the same hub connection and channel frames, server → client only.
//!
//! An SSE client is a hub connection like a socket (presence, per-user limit, logout), whose
//! queued frames become events named after their `type`. Each `message` event's `id:` encodes
//! every channel's position, so `EventSource`'s automatic `Last-Event-ID` on reconnect is
//! enough for exact recovery.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use sessiond_http::{ApiError, ApiResult};

use crate::channels::Since;
use crate::conn::{Conn, ConnReceiver, Outbound};
use crate::hub::Hub;
use crate::upgrade::PeerIp;
use crate::v1::{channel_access, connect_info, subscribe_conn, ConnectQuery};

/// Channel → (epoch, offset): the client's position, as carried in event ids.
type Positions = BTreeMap<String, (String, u64)>;

/// The SSE route.
pub fn router() -> Router<Hub> {
    Router::new().route("/v1/realtime/sse", get(open))
}

pub(crate) fn decode_positions(text: &str) -> Option<Positions> {
    let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn encode_positions(positions: &Positions) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(positions).unwrap_or_default())
}

async fn open(
    State(hub): State<Hub>,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let info = connect_info(&hub, &query, &headers, ip, "sse").await?;
    let names: Vec<String> = query
        .channels
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "channels must name at least one channel",
        ));
    }
    if names.len() > hub.config().max_subscriptions_per_socket {
        return Err(ApiError::limit("too many channels for one connection"));
    }
    let service = info.service;
    let mut access = Vec::with_capacity(names.len());
    for name in &names {
        access.push(channel_access(&hub, &info.user_id, service, name, None).await?);
    }
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.since.as_deref());
    let since = last_id.map(|text| {
        decode_positions(text)
            .ok_or_else(|| ApiError::bad_request("since / Last-Event-ID is not a position"))
    });
    let since = since.transpose()?.unwrap_or_default();
    let (conn, rx) = hub.connect(info, |_, _| None).await?;
    for (name, access) in names.iter().zip(access) {
        let from = since.get(name).map(|(epoch, offset)| Since {
            epoch: epoch.clone(),
            offset: *offset,
        });
        let subscribed = match hub.inner.prepare_channel(name).await {
            Ok(()) => subscribe_conn(&hub, &conn, name, access, &Value::Null, from.as_ref(), None),
            Err(e) => Err(e),
        };
        if let Err(e) = subscribed {
            hub.disconnect(&conn).await;
            return Err(e);
        }
    }
    let ping = hub.config().ping_interval();
    let events = events(hub, conn, rx);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(ping).text("ping"))
        .into_response())
}

/// Unregisters the connection when the response body is dropped (client gone).
struct Registration {
    hub: Hub,
    conn: Arc<Conn>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (hub, conn) = (self.hub.clone(), self.conn.clone());
        tokio::spawn(async move { hub.disconnect(&conn).await });
    }
}

struct Feed {
    registration: Registration,
    rx: ConnReceiver,
    positions: Positions,
    done: bool,
}

/// The event stream of one SSE connection.
fn events(
    hub: Hub,
    conn: Arc<Conn>,
    rx: ConnReceiver,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let feed = Feed {
        registration: Registration { hub, conn },
        rx,
        positions: Positions::new(),
        done: false,
    };
    stream::unfold(feed, |mut feed| async move {
        if feed.done {
            return None;
        }
        let event = match feed.rx.next().await {
            Outbound::Close(code, reason) => {
                feed.done = true;
                let logout = code == feed.registration.hub.config().logout_close_code;
                let kind = if logout { "logout" } else { "close" };
                Event::default()
                    .event(kind)
                    .data(json!({"type": kind, "code": code, "reason": &*reason}).to_string())
            }
            Outbound::Frame(frame) => to_event(&mut feed.positions, frame.as_str()),
        };
        Some((Ok(event), feed))
    })
}

/// One queued frame as an SSE event; `message` events carry the positions as their id.
fn to_event(positions: &mut Positions, frame: &str) -> Event {
    let parsed: Value = serde_json::from_str(frame).unwrap_or(Value::Null);
    let kind = parsed["type"].as_str().unwrap_or("message").to_string();
    let channel = parsed["channel"].as_str().unwrap_or("").to_string();
    let mut event = Event::default().event(&kind).data(frame);
    match kind.as_str() {
        "subscribed" => {
            let epoch = parsed["epoch"].as_str().unwrap_or("").to_string();
            let offset = parsed["offset"].as_u64().unwrap_or(0);
            positions.insert(channel, (epoch, offset));
        }
        "message" => {
            if let Some(position) = positions.get_mut(&channel) {
                position.1 = parsed["offset"].as_u64().unwrap_or(position.1);
            }
            event = event.id(encode_positions(positions));
        }
        _ => {}
    }
    event
}
