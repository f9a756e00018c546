//! The task that owns one WebSocket: reads client frames, writes queued frames, pings.
//!
//! One task per socket, one `select!` over three sources (the outbox — close requests first,
//! then queued frames —, inbound frames, the ping tick), so an idle socket is a parked future plus its buffers — no
//! second task, no per-socket channel of channels. The read and write buffers are sized by
//! the config (small by default): with tungstenite's defaults they, not the hub's state, are
//! what an idle connection costs.
//!
//! Limits enforced here: inbound message size (tungstenite refuses larger ones; the socket is
//! closed with 1009), messages per second (token bucket; closed with 1008), liveness (a socket
//! silent for `liveness_timeout_s` — no frame and no pong to our pings — is closed with 1001).

use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio::time::{Instant, MissedTickBehavior};

use crate::conn::{Conn, ConnReceiver, Outbound, CLOSE_GOING_AWAY};
use crate::hub::Hub;

/// Close code: policy violation (rate limit).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: try again later (a connection cap, a slow consumer).
pub const CLOSE_TRY_AGAIN: u16 = 1013;

/// A connect refused by a connection cap: the WebSocket is accepted and closed at once with
/// 1013 and the cap's message (a browser cannot read a refused upgrade's status, but it can
/// read a close code). Any other error stays an HTTP error.
pub fn refuse_at_cap(
    ws: axum::extract::ws::WebSocketUpgrade,
    error: sessiond_http::ApiError,
) -> sessiond_http::ApiResult<axum::response::Response> {
    if error.code != crate::hub::CAP_ERROR {
        return Err(error);
    }
    let reason = error.message;
    Ok(ws.on_upgrade(move |mut socket| async move {
        send_close(&mut socket, CLOSE_TRY_AGAIN, &reason).await;
    }))
}

/// What a protocol does with the frames of one socket.
pub trait Protocol: Send + 'static {
    /// A text frame from the client.
    fn on_text(
        &mut self,
        hub: &Hub,
        conn: &Arc<Conn>,
        text: Utf8Bytes,
    ) -> impl Future<Output = ()> + Send;
    /// A binary frame from the client (neither protocol accepts them).
    fn on_binary(&mut self, hub: &Hub, conn: &Arc<Conn>);
    /// The socket is gone (after the hub unregistered it).
    fn on_closed(&mut self, _hub: &Hub, _conn: &Arc<Conn>) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Token bucket: `rate` messages per second sustained, bursts of up to `rate`.
struct RateLimit {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        RateLimit {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn send_close(ws: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
}

/// Runs the socket until it closes, then unregisters it from the hub.
///
/// A plain `fn` returning an `async move` block, not an `async fn`: an async fn's future keeps
/// each argument twice (as passed, and moved into the body), which for the `WebSocket` alone
/// is ~370 B more in every parked idle socket.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn run<P: Protocol>(
    hub: Hub,
    conn: Arc<Conn>,
    mut rx: ConnReceiver,
    mut ws: WebSocket,
    mut protocol: P,
) -> impl Future<Output = ()> + Send {
    async move {
        let config = hub.config();
        let mut limit = RateLimit::new(config.max_messages_per_s);
        let liveness = config.liveness_timeout();
        let mut ticker = tokio::time::interval(config.ping_interval());
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                biased;
                out = rx.next() => match out {
                    Outbound::Frame(text) => {
                        if write_queued(&mut ws, text, &mut rx).await.is_err() {
                            break;
                        }
                    }
                    Outbound::Close(code, reason) => {
                        send_close(&mut ws, code, &reason).await;
                        break;
                    }
                },
                inbound = ws.recv() => {
                    let message = match inbound {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => {
                            if is_too_big(&e) {
                                send_close(&mut ws, CLOSE_TOO_BIG, "Message too big").await;
                            }
                            break;
                        }
                        None => break,
                    };
                    heard = Instant::now();
                    let counted = matches!(message, Message::Text(_) | Message::Binary(_));
                    if counted && !limit.allow() {
                        metrics::counter!("sessiond_realtime_rate_limited_total").increment(1);
                        send_close(&mut ws, CLOSE_POLICY, "Rate limit exceeded").await;
                        break;
                    }
                    match message {
                        // Boxed: the handling's state machine is large and lives only while a
                        // frame is handled; inline, every parked idle socket would carry it.
                        Message::Text(text) => Box::pin(protocol.on_text(&hub, &conn, text)).await,
                        Message::Binary(_) => protocol.on_binary(&hub, &conn),
                        Message::Ping(_) | Message::Pong(_) => {}
                        Message::Close(_) => break,
                    }
                }
                _ = ticker.tick() => {
                    if heard.elapsed() >= liveness {
                        metrics::counter!("sessiond_realtime_liveness_timeouts_total").increment(1);
                        send_close(&mut ws, CLOSE_GOING_AWAY, "Liveness timeout").await;
                        break;
                    }
                    if ws.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
            }
        }
        Box::pin(async {
            hub.disconnect(&conn).await;
            protocol.on_closed(&hub, &conn).await;
        })
        .await;
    }
}

/// Most queued frames written with one flush.
const MAX_BATCH: usize = 64;

/// Writes `first` and whatever else is already queued (up to [`MAX_BATCH`] frames), then
/// flushes once. A socket with a backlog — a busy channel — then costs one `write` syscall per
/// batch instead of one per frame (the frames share tungstenite's write buffer, up to
/// `realtime.write_buffer_bytes`); a lone frame is written at once, as before.
async fn write_queued(
    ws: &mut WebSocket,
    first: Utf8Bytes,
    rx: &mut ConnReceiver,
) -> Result<(), axum::Error> {
    ws.feed(Message::Text(first)).await?;
    for _ in 1..MAX_BATCH {
        match rx.try_frame() {
            Some(text) => ws.feed(Message::Text(text)).await?,
            None => break,
        }
    }
    ws.flush().await
}

/// Whether a read error is tungstenite refusing an over-size message or frame.
fn is_too_big(e: &axum::Error) -> bool {
    // tungstenite's `Error::Capacity` displays as "Space limit exceeded: …"; axum wraps it
    // without exposing the type, so its text is the only handle.
    e.to_string().contains("Space limit exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns, without calling it.
    fn future_size<A, B, C, D, E, F: Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The socket task's future is what every idle socket keeps parked (on top of its
    /// buffers): the per-message handling and the unregistering are boxed, so their state
    /// machines are not in it (1,896 B for v1 and 2,000 B for seed with them inline, 1,368 B
    /// without), and `run` is not an `async fn`, so its arguments are stored once (976 B;
    /// sizes from a debug build).
    #[test]
    fn the_socket_task_future_stays_small() {
        let v1 = future_size(run::<crate::v1::V1Protocol>);
        let seed = future_size(run::<crate::seed::SeedProtocol>);
        assert!(v1 <= 1000 && seed <= 1000, "v1 {v1} B, seed {seed} B");
    }
}
