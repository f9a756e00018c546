//! WebSocket test client for the realtime tests: a real tokio-tungstenite client against the
//! server the harness started, with helpers that wait for frames with a timeout (never sleep).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::TestServer;

pub mod sse;

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A connected client socket.
pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connect attempt ended.
pub enum Connect {
    Open(Box<Ws>),
    Refused(u16, Value),
}

impl Connect {
    pub fn open(self) -> Ws {
        match self {
            Connect::Open(ws) => *ws,
            Connect::Refused(status, body) => panic!("connect refused: {status} {body}"),
        }
    }

    pub fn refused(self) -> (u16, Value) {
        match self {
            Connect::Open(_) => panic!("connect unexpectedly accepted"),
            Connect::Refused(status, body) => (status, body),
        }
    }
}

/// Opens `path_and_query` as a WebSocket with extra request headers.
pub async fn connect(s: &TestServer, path_and_query: &str, headers: &[(&str, &str)]) -> Connect {
    connect_at(&s.addr.to_string(), path_and_query, headers).await
}

/// Opens `path_and_query` on the server at `host_port` (e.g. a spawned binary).
pub async fn connect_at(
    host_port: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Connect {
    let url = format!("ws://{host_port}{path_and_query}");
    let mut request = url.into_client_request().unwrap();
    add_headers(&mut request, headers);
    match tokio_tungstenite::connect_async(request).await {
        Ok((inner, _)) => Connect::Open(Box::new(Ws { inner })),
        Err(Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Connect::Refused(status, body)
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

fn add_headers(
    request: &mut tokio_tungstenite::tungstenite::handshake::client::Request,
    headers: &[(&str, &str)],
) {
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
}

/// Opens `path_and_query` over a TCP socket whose receive buffer is `rcvbuf` bytes: a client
/// that does not read fills it (and the server's small send buffer) within a few frames, so
/// the server's writes block — a slow reader for real, whatever the machine's speed.
pub async fn connect_slow(
    s: &TestServer,
    path_and_query: &str,
    headers: &[(&str, &str)],
    rcvbuf: u32,
) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(rcvbuf).unwrap();
    let stream = socket.connect(s.addr).await.unwrap();
    let mut request = format!("ws://{}{path_and_query}", s.addr)
        .into_client_request()
        .unwrap();
    add_headers(&mut request, headers);
    let (inner, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    Ws { inner }
}

/// Creates a session for `user` and returns its id (the session token).
pub async fn session(s: &TestServer, user: &str, key: Option<&str>) -> String {
    let mut req = s.post("/v1/sessions").json(&json!({"user_id": user}));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

impl Ws {
    pub async fn send(&mut self, value: Value) {
        self.inner
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.inner.send(message).await.unwrap();
    }

    /// The next text frame as JSON (control frames skipped); panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.inner.next())
                .await
                .expect("timed out waiting for a frame");
            match frame {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next text frame, which must have `type` = `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next().await;
        assert_eq!(frame["type"], kind, "unexpected frame {frame}");
        frame
    }

    /// Waits for the server's close frame (skipping other frames); returns code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.inner.next())
                .await
                .expect("timed out waiting for the close frame");
            match frame {
                Some(Ok(Message::Close(Some(close)))) => {
                    return (u16::from(close.code), close.reason.to_string())
                }
                Some(Ok(Message::Close(None))) | None => {
                    return (u16::from(CloseCode::Status), String::new())
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before close: {e}"),
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.inner.close(None).await;
        // Drain until the server's close reply so the server has seen it.
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.inner.next().await {}
        })
        .await;
    }
}

/// Polls `f` until it returns true (checks every 20 ms, at most [`WAIT`]).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
