//! The HTTP side of opening a socket: extractors and the accept step shared by both
//! protocols.
//!
//! Authentication and every limit are checked *before* the upgrade so a refused client gets a
//! plain 4xx JSON error it can read, not a socket that opens and closes. The connection is
//! registered with the hub before the 101 (that is where the per-user socket limit is
//! decided), so a failed upgrade must unregister it again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;
use sessiond_http::ApiError;

use crate::conn::{Conn, ConnReceiver};
use crate::hub::Hub;
use crate::socket::{self, Protocol};

/// The peer's IP address, when the server was started with connect info.
pub struct PeerIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// A WebSocket upgrade, or why the request is not one (checked after authentication).
pub struct WsUpgrade(pub Result<WebSocketUpgrade, WebSocketUpgradeRejection>);

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(WsUpgrade(
            WebSocketUpgrade::from_request_parts(parts, state).await,
        ))
    }
}

/// A request that is not a valid WebSocket upgrade: 400 with axum's explanation.
pub fn upgrade_error(rejection: WebSocketUpgradeRejection) -> ApiError {
    ApiError::bad_request(format!(
        "expected a WebSocket upgrade: {}",
        rejection.body_text()
    ))
}

/// Completes the upgrade with the configured buffer sizes and runs the socket task.
pub fn accept<P: Protocol>(
    hub: Hub,
    conn: Arc<Conn>,
    rx: ConnReceiver,
    ws: WebSocketUpgrade,
    protocol: P,
) -> Response {
    let config = hub.config();
    let failed_hub = hub.clone();
    let failed_conn = conn.clone();
    ws.read_buffer_size(config.read_buffer_bytes)
        .write_buffer_size(config.write_buffer_bytes)
        .max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_message_bytes)
        .on_failed_upgrade(move |error| {
            tracing::debug!(%error, "WebSocket upgrade failed");
            tokio::spawn(async move { failed_hub.disconnect(&failed_conn).await });
        })
        .on_upgrade(move |socket| socket::run(hub, conn, rx, socket, protocol))
}
