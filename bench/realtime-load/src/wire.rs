//! The two wire protocols the load generator speaks, reduced to what the benchmark needs.
//!
//! - **sessiond**: JSON text frames (docs/realtime.md): the v1 protocol at `/v1/realtime` for
//!   channels, seed C's protocol at `/__user-session` for `update_presence`.
//! - **Socket.IO**: Engine.IO v4 over a plain WebSocket (`/socket.io/?EIO=4&transport=websocket`),
//!   Socket.IO v5 packets inside: the server opens with `0{…}`, the client connects the default
//!   namespace with `40` and gets `40{"sid":…}`, events are `42["name",data]`, an event with an
//!   acknowledgement id is `42<id>[…]` and its reply `43<id>[…]`, and the server's ping `2` must
//!   be answered with pong `3` (Engine.IO v4: the server pings).
//!
//! Frames are recognized by substring, never fully parsed: the client shares the machine's two
//! cores with the server, so every microsecond it spends per frame is taken from the server.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::Res;

/// One client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Which server is under load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// sessiond's realtime hub.
    Sessiond,
    /// A Socket.IO server (bench/realtime/socketio-server.mjs).
    SocketIo,
}

impl Target {
    /// Parses `sessiond` or `socketio`.
    pub fn parse(s: &str) -> Res<Target> {
        match s {
            "sessiond" => Ok(Target::Sessiond),
            "socketio" => Ok(Target::SocketIo),
            other => Err(format!("--target must be sessiond or socketio, not {other}").into()),
        }
    }
}

/// How a socket authenticates and which protocol it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// sessiond v1 (`/v1/realtime`) or a plain Socket.IO socket.
    Channels,
    /// sessiond's seed protocol (`/__user-session`) or a Socket.IO socket with `proto=seed`
    /// (both send an `initial_state` on connect).
    Seed,
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port` of the server.
    pub addr: String,
    /// Which server it is.
    pub target: Target,
    /// sessiond service API key (sent as `Authorization: Bearer`), for sockets acting for a
    /// user named by `userId`.
    pub key: Option<String>,
}

/// Who a socket is.
pub struct Identity<'a> {
    /// The user (ignored by sessiond when a session token is given: the session names it).
    pub user: &'a str,
    /// The device.
    pub device: &'a str,
    /// A sessiond session id (seed protocol sockets of real users).
    pub token: Option<&'a str>,
}

/// Client buffers kept small: thousands of client sockets share the server's machine.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens a socket and completes the protocol handshake: returns once the server has sent its
/// first frame (`connected` / `initial_state`, or Socket.IO's connect acknowledgement and,
/// for the seed flavor, `initial_state`).
pub async fn open(ep: &Endpoint, flavor: Flavor, who: &Identity<'_>) -> Res<Ws> {
    let path = match (ep.target, flavor) {
        (Target::Sessiond, Flavor::Channels) => {
            format!("/v1/realtime?userId={}&deviceId={}", who.user, who.device)
        }
        (Target::Sessiond, Flavor::Seed) => match who.token {
            Some(token) => format!("/__user-session?deviceId={}&token={token}", who.device),
            None => format!(
                "/__user-session?userId={}&deviceId={}",
                who.user, who.device
            ),
        },
        (Target::SocketIo, flavor) => format!(
            "/socket.io/?EIO=4&transport=websocket&userId={}&deviceId={}{}",
            who.user,
            who.device,
            if flavor == Flavor::Seed {
                "&proto=seed"
            } else {
                ""
            }
        ),
    };
    let mut request = format!("ws://{}{path}", ep.addr)
        .into_client_request()
        .map_err(|e| format!("bad request for {path}: {e}"))?;
    if let (Target::Sessiond, Some(key), None) = (ep.target, &ep.key, who.token) {
        let value =
            HeaderValue::from_str(&format!("Bearer {key}")).map_err(|e| format!("bad key: {e}"))?;
        request.headers_mut().insert("authorization", value);
    }
    let tcp = TcpStream::connect(&ep.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", ep.addr))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(client_config()))
            .await
            .map_err(|e| format!("WebSocket handshake on {path}: {e}"))?;
    match ep.target {
        Target::Sessiond => {
            let first = next_text(&mut ws).await?;
            let want = match flavor {
                Flavor::Channels => "\"connected\"",
                Flavor::Seed => "\"initial_state\"",
            };
            if !first.contains(want) {
                return Err(format!("unexpected first frame on {path}: {first}").into());
            }
        }
        Target::SocketIo => {
            let open = next_text(&mut ws).await?;
            if !open.starts_with("0{") {
                return Err(format!("expected an Engine.IO open packet, got {open}").into());
            }
            send(&mut ws, "40".to_string()).await?;
            wait_for(&mut ws, |t| t.starts_with("40")).await?;
            if flavor == Flavor::Seed {
                wait_for(&mut ws, |t| t.contains("\"initial_state\"")).await?;
            }
        }
    }
    Ok(ws)
}

/// Sends one text frame.
pub async fn send(ws: &mut Ws, text: String) -> Res<()> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}").into())
}

/// The next text frame (control frames are handled by tungstenite; a Socket.IO ping is
/// answered here and skipped).
pub async fn next_text(ws: &mut Ws) -> Res<String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| "no frame from the server within 60 s".to_string())?;
        match message {
            Some(Ok(Message::Text(text))) => {
                if text.as_str() == "2" {
                    send(ws, "3".to_string()).await?;
                    continue;
                }
                return Ok(text.as_str().to_string());
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by server: {frame:?}").into())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}").into()),
            None => return Err("connection ended".into()),
        }
    }
}

/// Keeps an idle socket alive (answers Socket.IO pings; tungstenite answers WebSocket pings)
/// until the server closes it or it fails; returns why it ended.
pub async fn hold(ws: &mut Ws) -> String {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                if let Err(e) = send(ws, "3".to_string()).await {
                    return e.to_string();
                }
            }
            Some(Ok(Message::Close(frame))) => return format!("closed by server: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return format!("read: {e}"),
            None => return "connection ended".into(),
        }
    }
}

/// Reads frames until one satisfies `done`.
pub async fn wait_for(ws: &mut Ws, done: impl Fn(&str) -> bool) -> Res<String> {
    loop {
        let text = next_text(ws).await?;
        if done(&text) {
            return Ok(text);
        }
    }
}

/// A subscribe request for `channel`, and a predicate recognizing its reply.
pub fn subscribe_frame(target: Target, channel: &str) -> (String, fn(&str) -> bool) {
    match target {
        Target::Sessiond => (
            format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#),
            |t| t.contains("\"subscribed\""),
        ),
        Target::SocketIo => (
            format!(r#"421["subscribe",{{"channel":"{channel}"}}]"#),
            |t| t.starts_with("431["),
        ),
    }
}

/// A publish of `data` (a JSON object) on `channel`; `ack` numbers Socket.IO acknowledgements.
pub fn publish_frame(target: Target, channel: &str, data: &str, ack: u64) -> String {
    match target {
        Target::Sessiond => {
            format!(r#"{{"type":"publish","channel":"{channel}","data":{data}}}"#)
        }
        Target::SocketIo => {
            format!(r#"42{ack}["publish",{{"channel":"{channel}","data":{data}}}]"#)
        }
    }
}

/// A seed-protocol `update_presence`.
pub fn presence_frame(target: Target, presence: &str) -> String {
    match target {
        Target::Sessiond => format!(r#"{{"type":"update_presence","presence":"{presence}"}}"#),
        Target::SocketIo => format!(r#"42["update_presence",{{"presence":"{presence}"}}]"#),
    }
}

/// Whether a frame is a `presence_updated` broadcast (either server).
pub fn is_presence_updated(text: &str) -> bool {
    text.contains("presence_updated")
}

/// The unsigned integer following `"<key>":` in `text`, if any.
pub fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold((0u64, 0usize), |(n, len), b| {
            (n * 10 + u64::from(b - b'0'), len + 1)
        });
    (digits.1 > 0).then_some(digits.0)
}

#[cfg(test)]
mod tests {
    use super::number_after;

    #[test]
    fn finds_numbers_by_key() {
        let frame = r#"42["message",{"data":{"pad":"xx","seq":42,"t":1234},"offset":7}]"#;
        assert_eq!(number_after(frame, "\"seq\":"), Some(42));
        assert_eq!(number_after(frame, "\"t\":"), Some(1234));
        assert_eq!(number_after(frame, "\"nope\":"), None);
        assert_eq!(number_after(r#"{"seq":"x"}"#, "\"seq\":"), None);
    }
}
