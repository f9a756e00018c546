//! The HTTP/1 listener: the one place that accepts TCP connections and decides how long and
//! how many a client may hold.
//!
//! `axum::serve` has no knobs for hostile clients, so the server runs hyper's HTTP/1
//! connection itself and adds what a public listener needs:
//!
//! - **Connection caps**: at most `http.max_connections` open connections, and at most
//!   `http.max_connections_per_ip` from one address. Past a cap the client reads a 503 and
//!   the socket is closed. A WebSocket keeps its slot for its whole life (the slot travels
//!   with the socket into the upgrade).
//! - **Timeouts per phase**, checked by one watchdog per connection: the request head
//!   (`header_timeout_ms`, counted from the connection's first byte or the first byte of a
//!   following request — slowloris), the body (`body_timeout_ms`, from the first read of the
//!   body to its end; a slow body is a 408), the idle keep-alive gap (`idle_timeout_ms`), and
//!   a WebSocket handshake (`websocket_handshake_timeout_ms`, from the upgrade request's
//!   first byte until the socket is handed to the WebSocket task). hyper's own
//!   `header_read_timeout` is not used: it also runs while a keep-alive connection is idle,
//!   so it could not be told apart from the idle timeout.
//! - **Header caps**: hyper's `max_headers` and `max_header_size` (a 431 past them; `Limits`).
//! - **Lingering close**: when hyper is done with a socket, its write side is shut down and
//!   up to `linger_max_bytes` still arriving are read and dropped (for at most
//!   `linger_timeout_ms`) before it is closed. Closing a socket with unread data makes the
//!   kernel send a reset, and a client that writes its whole over-limit body before reading
//!   (Python's `http.client`, many SDKs) would lose the 413 that was already sent to it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use sessiond_http::body::BodyTimedOut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use placement::LiveRuntime;

/// Serves `app` on `listener` until `stop` is cancelled, then lets open requests finish and
/// returns once every connection is closed (the caller bounds that wait).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let live = LiveRuntime::start(limits.live_read_threads, limits.live_read_nice).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot start the live-read threads; live reads share the others");
        LiveRuntime::none()
    });
    let limits = Arc::new(limits);
    let slots = Slots::new(&limits);
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_per_connection(&error) => continue,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // TCP_NODELAY: WebSocket frames and SSE events are small writes that must leave at
        // once; with Nagle on, a frame waits for the peer's delayed ACK of the previous one
        // (up to 40 ms on Linux), which bench/realtime measured as ~20 ms per round trip.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
        }
        let Some(slot) = slots.take(peer.ip()) else {
            metrics::counter!("sessiond_http_connections_refused_total").increment(1);
            tokio::spawn(refuse(tcp, limits.clone()));
            continue;
        };
        let app = app.clone();
        // Its own node of the token: a connection checks it on every poll (`stop_signal`).
        let (limits, stop) = (limits.clone(), stop.child_token());
        match live.handle() {
            None => tracker.spawn(connection(tcp, peer, slot, app, limits, stop)),
            Some(live) => tracker.spawn(place(
                tcp,
                peer,
                slot,
                (app, limits, stop),
                live.clone(),
                tracker.clone(),
            )),
        };
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    drop(live);
}

/// Starts a connection's task on the live runtime if it opens with a live read, else on this
/// one (`listener_placement`). A task of its own rather than a wrapper around the connection,
/// so that a connection's future is the same size wherever it runs.
async fn place(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    (app, limits, stop): (Router, Arc<Limits>, CancellationToken),
    live: tokio::runtime::Handle,
    tracker: TaskTracker,
) {
    if !placement::opens_live_read(&tcp).await {
        tracker.spawn(connection(tcp, peer, slot, app, limits, stop));
        return;
    }
    // A socket is registered with one runtime's reactor: it moves as a plain socket and is
    // registered again on the live runtime.
    let registered = tcp.into_std().and_then(|tcp| {
        let _live = live.enter();
        TcpStream::from_std(tcp)
    });
    match registered {
        Ok(tcp) => {
            metrics::counter!("sessiond_http_live_read_connections_total").increment(1);
            live.spawn(tracker.track_future(connection(tcp, peer, slot, app, limits, stop)));
        }
        Err(error) => {
            tracing::debug!(%peer, %error, "cannot move a live-read connection")
        }
    }
}

/// Accept errors that concern one connection only (the listener is fine).
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// One connection, from accept to close. Not an `async fn`, whose future would keep every
/// argument twice (as passed and as moved into the body) for the connection's whole life.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    app: Router,
    limits: Arc<Limits>,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send {
    async move {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(ConnIo {
            tcp: Some(tcp),
            activity: activity.clone(),
            limits: limits.clone(),
            slot: Some(slot),
        });
        let service = {
            let activity = activity.clone();
            let body_timeout = limits.body_timeout;
            hyper::service::service_fn(move |request: Request<Incoming>| {
                handle(&app, &activity, peer, body_timeout, request)
            })
        };
        let conn = limits.http1().serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let stop = crate::stop_signal::StopSignal::new(&stop);
        tokio::pin!(stop);
        let tick = limits.tick();
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = stop.as_mut(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep(tick) => match activity.verdict(&limits) {
                    Verdict::Keep => {}
                    Verdict::CloseIdle => if !closing {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    },
                    Verdict::Abort(reason) => {
                        metrics::counter!("sessiond_http_connection_timeouts_total", "phase" => reason)
                            .increment(1);
                        tracing::debug!(%peer, phase = reason, "closing a connection that timed out");
                        return;
                    }
                },
            }
        }
    }
}

/// One request's way through the app, boxed: hyper keeps a box the size of the service's
/// future for the connection's whole life (it reuses it for each request), so an unboxed
/// future — the router's whole call state, ~600 B — would be held by every open connection,
/// idle or streaming an SSE response, instead of only while a request is being answered.
type Handling = Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

fn handle(
    app: &Router,
    activity: &Arc<Activity>,
    peer: SocketAddr,
    body_timeout: Duration,
    request: Request<Incoming>,
) -> Handling {
    let upgrade = request.headers().contains_key(header::UPGRADE);
    let mut request = request.map(|body| Body::new(TimedBody::new(body, body_timeout)));
    request.extensions_mut().insert(ConnectInfo(peer));
    let mut guard = activity.begin(upgrade);
    let app = app.clone();
    Box::pin(async move {
        let response = match app.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        guard.switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        Ok::<_, Infallible>(response.map(|body| {
            Body::new(Guarded {
                body,
                _guard: guard,
            })
        }))
    })
}

/// A client past a connection cap: a 503 it can read, then close.
async fn refuse(mut tcp: TcpStream, limits: Arc<Limits>) {
    const BODY: &str =
        r#"{"error":{"code":"unavailable","message":"too many connections; retry later"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = tcp.write_all(answer.as_bytes());
    if tokio::time::timeout(limits.linger_timeout, write)
        .await
        .is_ok()
    {
        linger(tcp, &limits).await;
    }
}

/// Shuts the write side, then reads and drops what the client still sends (bounded in bytes
/// and time), so the kernel does not answer unread data with a reset.
async fn linger(mut tcp: TcpStream, limits: &Limits) {
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut left = limits.linger_max_bytes;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(limits.linger_timeout, drain).await;
}

/// Where a connection is in its request cycle.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Reading a request head since then.
    Head(Instant),
    /// Between requests (keep-alive) since then.
    Idle(Instant),
    /// A request is being handled (its body has its own timeout).
    Busy,
    /// An upgrade request, since its head began, until hyper hands the socket over.
    Upgrading(Instant),
}

/// What the watchdog does now.
enum Verdict {
    Keep,
    CloseIdle,
    Abort(&'static str),
}

/// A connection's phase, shared by its IO (first byte of a head), its service (request
/// begins and ends) and its watchdog.
struct Activity {
    state: Mutex<(Phase, usize)>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new((Phase::Head(Instant::now()), 0)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut (Phase, usize)) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Bytes arrived: an idle connection starts a new request head.
    fn on_read(&self) {
        self.with(|(phase, _)| {
            if let Phase::Idle(_) = phase {
                *phase = Phase::Head(Instant::now());
            }
        });
    }

    /// A request head was parsed; the guard ends the request when its response is done.
    fn begin(self: &Arc<Self>, upgrade: bool) -> RequestGuard {
        self.with(|(phase, in_flight)| {
            *in_flight += 1;
            *phase = match (*phase, upgrade) {
                (Phase::Head(since) | Phase::Idle(since), true) => Phase::Upgrading(since),
                (_, true) => Phase::Upgrading(Instant::now()),
                (_, false) => Phase::Busy,
            };
        });
        RequestGuard {
            activity: self.clone(),
            switching: false,
        }
    }

    fn verdict(&self, limits: &Limits) -> Verdict {
        self.with(|(phase, _)| match *phase {
            Phase::Head(since) if since.elapsed() > limits.header_timeout => {
                Verdict::Abort("header")
            }
            Phase::Upgrading(since) if since.elapsed() > limits.handshake_timeout => {
                Verdict::Abort("websocket_handshake")
            }
            Phase::Idle(since) if since.elapsed() > limits.idle_timeout => Verdict::CloseIdle,
            _ => Verdict::Keep,
        })
    }
}

/// Ends a request when its response body is done (or dropped).
struct RequestGuard {
    activity: Arc<Activity>,
    /// A 101 answer: the connection stays "upgrading" until hyper hands it over.
    switching: bool,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let switching = self.switching;
        self.activity.with(|(phase, in_flight)| {
            *in_flight = in_flight.saturating_sub(1);
            if *in_flight == 0 && !switching {
                *phase = Phase::Idle(Instant::now());
            }
        });
    }
}

/// A response body that ends its request when it is dropped.
struct Guarded {
    body: Body,
    _guard: RequestGuard,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails with [`BodyTimedOut`] when it has not fully arrived within the
/// timeout after its first read.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket under hyper: notes the first byte of each request head, and when dropped
/// (hyper is done, or the WebSocket closed) lingers and then gives back its slot.
struct ConnIo {
    tcp: Option<TcpStream>,
    activity: Arc<Activity>,
    limits: Arc<Limits>,
    slot: Option<Slot>,
}

impl ConnIo {
    fn tcp(&mut self) -> Pin<&mut TcpStream> {
        // Only `Drop` takes the stream out; the IO is never used after that.
        #[allow(clippy::expect_used)]
        Pin::new(self.tcp.as_mut().expect("the socket is present until drop"))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(self.tcp().poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.tcp().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.tcp().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tcp().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tcp().poll_shutdown(cx)
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        let (Some(tcp), slot) = (self.tcp.take(), self.slot.take()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let limits = self.limits.clone();
            runtime.spawn(async move {
                linger(tcp, &limits).await;
                drop(slot);
            });
        }
    }
}

/// The connection caps: a semaphore for all, a count per address.
struct Slots {
    all: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
}

impl Slots {
    fn new(limits: &Limits) -> Slots {
        let all = match limits.max_connections {
            0 => Semaphore::MAX_PERMITS,
            n => n.min(Semaphore::MAX_PERMITS),
        };
        Slots {
            all: Arc::new(Semaphore::new(all)),
            per_ip: Arc::default(),
            max_per_ip: limits.max_connections_per_ip,
        }
    }

    /// A slot for a connection from `ip`, or `None` past a cap.
    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let permit = self.all.clone().try_acquire_owned().ok()?;
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                return None;
            }
            *count += 1;
        }
        Some(Slot {
            _permit: permit,
            ip,
            per_ip: (self.max_per_ip > 0).then(|| self.per_ip.clone()),
        })
    }
}

/// One connection's place under the caps; given back when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(per_ip) = &self.per_ip {
            let mut per_ip = per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = per_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}

#[path = "listener_limits.rs"]
mod limits;
pub use limits::Limits;

#[path = "listener_placement.rs"]
mod placement;

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
