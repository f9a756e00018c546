//! Open sockets: one [`Conn`] handle per socket and the per-user registry of them.
//!
//! The registry is deliberately separate from the per-user state object of the runtime: the
//! runtime may evict a user's state while their sockets stay open (an idle user costs only
//! the sockets), and a socket must never vanish because its user's state was evicted.
//!
//! A handle is what other parts of the hub hold to reach a socket: a bounded outbound queue
//! (a socket that falls behind is closed rather than buffered without bound) and a close
//! request, which jumps the queue so a logout is never stuck behind a backlog. The
//! socket's own task owns the WebSocket and drains both.
//!
//! Presence frames are the exception to "fall behind and be closed": a mass join sends every
//! member one diff per joiner (N² frames for N members), so a reader that is merely slower
//! than the burst would overflow on frames that the next `presence_state` makes obsolete. A
//! lagging socket (queue half full) gets no presence diffs of a channel; the channel is marked
//! instead, and once the queue has drained the socket task asks the channel for one fresh
//! `presence_state` (queued under the channel's lock, so later diffs apply on top of it).
//! Messages keep the hard limit: they cannot be rebuilt, only recovered by offset.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use sessiond_store::{now_ms, Millis};
use tokio::sync::Notify;

/// Close code for a socket whose outbound queue overflowed (RFC 6455 "try again later").
pub const CLOSE_SLOW_CONSUMER: u16 = 1013;

/// Close code: going away (liveness timeout, server shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// One open socket, as the rest of the hub sees it.
pub struct Conn {
    /// Connection id: random (CSPRNG), so unique across the nodes of a cluster too.
    pub id: u64,
    /// The user the socket belongs to.
    pub user_id: Arc<str>,
    /// The client's device id (`unknown` when not given).
    pub device_id: Box<str>,
    /// The `/v1/sessions` session that authenticated the socket (none for service-key
    /// sockets and for browsers identified by the middleware's cookie).
    pub session_id: Option<Box<str>>,
    /// Opened with a service API key: may act anywhere.
    pub service: bool,
    /// When the socket was accepted (unix ms).
    pub connected_at: Millis,
    /// The peer's address.
    pub ip: Option<IpAddr>,
    /// Which protocol the socket speaks (`seed`, `v1`, `sse`).
    pub protocol: &'static str,
    /// The client's `User-Agent` at connect (cut at `realtime.max_id_bytes`), for the devices
    /// view.
    pub user_agent: Option<Box<str>>,
    /// Channels the socket is subscribed to (v1 and SSE), with what allowed each.
    pub subscriptions: Mutex<Vec<Subscription>>,
    /// Queued frames and the close request. A plain deque rather than a channel: an empty
    /// `VecDeque` allocates nothing, where a tokio channel allocates a block of slots per
    /// socket up front — on an idle socket that block would be most of its cost.
    outbox: Mutex<Outbox>,
    capacity: usize,
    wake: Notify,
    /// Last application frame from the client (unix ms; 0 = none). Heartbeats never set it:
    /// an open tab must still idle out. Read by the session watch, which turns it into one
    /// session extension per check instead of a store write per frame.
    active_at: AtomicI64,
}

/// What a socket holds of a channel it is subscribed to: its name, and the way to leave it.
/// A trait so that sockets sit below channels (a channel lists its sockets; `channels`
/// implements this for its `Channel`).
pub trait JoinedChannel: Send + Sync {
    /// The channel's name.
    fn name(&self) -> &Arc<str>;
    /// Removes `conn` from the channel (the others see the presence leave); false when it
    /// was not subscribed.
    fn unsubscribe(&self, conn: &Arc<Conn>) -> bool;
    /// Queues a fresh `presence_state` to `conn`, which dropped diffs of this channel while
    /// it lagged; false when it is not subscribed (any more).
    fn resend_presence(&self, conn: &Arc<Conn>) -> bool;
}

/// One channel a socket is subscribed to, and the rights it was granted there.
pub struct Subscription {
    /// The channel.
    pub channel: Arc<dyn JoinedChannel>,
    /// May publish from this socket.
    pub publish: bool,
    /// When the grant that allowed it runs out (unix ms); `None` = never. The socket task
    /// ends the subscription at that time ([`ConnReceiver::next`]).
    pub expires_at: Option<Millis>,
}

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Utf8Bytes>,
    close: Option<(u16, Box<str>)>,
    /// Sent just before the close frame (why the connection ends).
    last_words: Option<Utf8Bytes>,
    /// Channels whose presence frames were dropped while the socket lagged: each gets a fresh
    /// `presence_state` once the queue drains. Empty (no allocation) on a socket keeping up.
    behind: Vec<Arc<str>>,
}

/// What the socket task must do next.
pub enum Outbound {
    /// Write this text frame.
    Frame(Utf8Bytes),
    /// Send a close frame with this code and reason, then stop.
    Close(u16, Box<str>),
}

/// The socket task's end of a [`Conn`]: the single consumer of its outbox.
pub struct ConnReceiver {
    conn: Arc<Conn>,
}

impl ConnReceiver {
    /// The next thing to do: a close request first (it jumps the queue), else the oldest
    /// queued frame; waits when there is neither. Cancel-safe.
    ///
    /// It also ends subscriptions whose grant ran out: at the earliest `expires_at` it
    /// unsubscribes them and queues `unsubscribed` with reason `grant_expired`, so an idle
    /// socket needs no timer task of its own, only this one deadline.
    pub async fn next(&mut self) -> Outbound {
        loop {
            let notified = self.conn.wake.notified();
            tokio::pin!(notified);
            // Registered before checking, so a push between the check and the wait wakes us.
            notified.as_mut().enable();
            {
                let mut outbox = lock(&self.conn.outbox);
                if let Some((code, reason)) = outbox.close.clone() {
                    if let Some(last) = outbox.last_words.take() {
                        return Outbound::Frame(last);
                    }
                    return Outbound::Close(code, reason);
                }
                if let Some(frame) = outbox.frames.pop_front() {
                    return Outbound::Frame(frame);
                }
                if !outbox.behind.is_empty() {
                    let behind = outbox.behind.clone();
                    drop(outbox);
                    self.conn.catch_up(&behind);
                    continue;
                }
            }
            match self.conn.next_expiry() {
                None => notified.await,
                Some(at) => {
                    let wait = Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0));
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(wait) => self.conn.end_expired(now_ms()),
                    }
                }
            }
        }
    }

    /// The oldest queued frame, without waiting; `None` when nothing is queued or a close was
    /// requested (the close goes out first, through [`next`](Self::next)). Lets the socket
    /// task write a backlog with one flush.
    pub fn try_frame(&mut self) -> Option<Utf8Bytes> {
        let mut outbox = lock(&self.conn.outbox);
        if outbox.close.is_some() {
            return None;
        }
        outbox.frames.pop_front()
    }
}

/// What a new connection is.
pub struct ConnInfo {
    /// Owner.
    pub user_id: String,
    /// Device id.
    pub device_id: String,
    /// Authenticating session.
    pub session_id: Option<String>,
    /// Opened with a service API key.
    pub service: bool,
    /// Peer address.
    pub ip: Option<IpAddr>,
    /// Accept time (unix ms).
    pub connected_at: Millis,
    /// Protocol name (`seed`, `v1`, `sse`).
    pub protocol: &'static str,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// The authenticating session's deadlines (watched while the socket is open).
    pub deadlines: Option<crate::auth::SessionDeadlines>,
}

/// A random non-zero connection id.
fn fresh_id() -> u64 {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sessiond_http::ids::random_id())
        .unwrap_or_default();
    raw.iter()
        .take(8)
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        .max(1)
}

impl Conn {
    /// A handle and the socket task's receiver, with room for `queue` queued frames.
    pub fn new(info: ConnInfo, queue: usize) -> (Arc<Conn>, ConnReceiver) {
        let conn = Arc::new(Conn {
            id: fresh_id(),
            user_id: Arc::from(info.user_id),
            device_id: info.device_id.into_boxed_str(),
            session_id: info.session_id.map(String::into_boxed_str),
            service: info.service,
            connected_at: info.connected_at,
            ip: info.ip,
            protocol: info.protocol,
            user_agent: info.user_agent.map(String::into_boxed_str),
            subscriptions: Mutex::new(Vec::new()),
            outbox: Mutex::new(Outbox::default()),
            capacity: queue.max(1),
            wake: Notify::new(),
            active_at: AtomicI64::new(0),
        });
        (conn.clone(), ConnReceiver { conn })
    }

    /// Records an application frame from the client (activity of its session).
    pub fn mark_active(&self) {
        self.active_at.store(now_ms(), Ordering::Relaxed);
    }

    /// When the client last sent an application frame (0 = never).
    pub fn active_at(&self) -> Millis {
        self.active_at.load(Ordering::Relaxed)
    }

    /// Queues a text frame; a full queue closes the socket (slow consumer). False when the
    /// frame was not queued (full, or the socket is closing).
    pub fn send(&self, frame: Utf8Bytes) -> bool {
        let mut outbox = lock(&self.outbox);
        if outbox.close.is_some() {
            return false;
        }
        if outbox.frames.len() >= self.capacity {
            drop(outbox);
            metrics::counter!("sessiond_realtime_slow_consumers_total").increment(1);
            self.close(CLOSE_SLOW_CONSUMER, "Outbound queue overflow");
            return false;
        }
        outbox.frames.push_back(frame);
        drop(outbox);
        self.wake.notify_one();
        true
    }

    /// Queues a presence frame of `channel` (`state`: a full `presence_state`, else a
    /// `presence_diff`). A lagging socket (queue at least half full), or one already behind
    /// on this channel, does not get it: the channel is marked and gets a fresh
    /// `presence_state` once the queue drains ([`ConnReceiver::next`]). Never closes the
    /// socket. Call under the channel's lock, so frames of one channel keep their order.
    pub(crate) fn send_presence(&self, channel: &Arc<str>, frame: Utf8Bytes, state: bool) -> bool {
        let mut outbox = lock(&self.outbox);
        if outbox.close.is_some() {
            return false;
        }
        let marked = outbox.behind.iter().position(|c| c == channel);
        let lagging = outbox.frames.len() >= (self.capacity / 2).max(1);
        if lagging || (marked.is_some() && !state) {
            if marked.is_none() {
                outbox.behind.push(channel.clone());
                metrics::counter!("sessiond_realtime_presence_resyncs_total").increment(1);
            }
            return false;
        }
        if let Some(i) = marked {
            outbox.behind.swap_remove(i);
        }
        outbox.frames.push_back(frame);
        drop(outbox);
        self.wake.notify_one();
        true
    }

    /// Queues a fresh `presence_state` for every channel in `behind` (the queue drained); a
    /// channel the socket left meanwhile is just unmarked (one it is still in unmarks itself
    /// when the state is queued).
    fn catch_up(self: &Arc<Self>, behind: &[Arc<str>]) {
        for name in behind {
            let channel = lock(&self.subscriptions)
                .iter()
                .find(|s| s.channel.name() == name)
                .map(|s| s.channel.clone());
            if !channel.is_some_and(|c| c.resend_presence(self)) {
                lock(&self.outbox).behind.retain(|c| c != name);
            }
        }
    }

    /// Asks the socket task to send a close frame and stop. The first request wins.
    pub fn close(&self, code: u16, reason: &str) {
        self.close_inner(None, code, reason);
    }

    /// Like [`close`](Self::close), with one last frame sent before the close frame (queued
    /// frames are still dropped: the close jumps the queue).
    pub fn close_after(&self, last: Utf8Bytes, code: u16, reason: &str) {
        self.close_inner(Some(last), code, reason);
    }

    fn close_inner(&self, last: Option<Utf8Bytes>, code: u16, reason: &str) {
        let mut outbox = lock(&self.outbox);
        if outbox.close.is_none() {
            outbox.close = Some((code, reason.into()));
            outbox.last_words = last;
            outbox.frames = VecDeque::new();
            drop(outbox);
            self.wake.notify_one();
        }
    }

    /// True for sockets opened with a service key: they may act anywhere.
    pub fn is_service(&self) -> bool {
        self.service
    }

    /// Names of the channels the socket is subscribed to.
    pub fn channel_names(&self) -> Vec<String> {
        lock(&self.subscriptions)
            .iter()
            .map(|s| s.channel.name().to_string())
            .collect()
    }

    /// The socket's subscription to `name`, if any: (may publish, expires at).
    pub fn subscription(&self, name: &str) -> Option<(bool, Option<Millis>)> {
        lock(&self.subscriptions)
            .iter()
            .find(|s| &**s.channel.name() == name)
            .map(|s| (s.publish, s.expires_at))
    }

    /// Records (or updates) the subscription to `channel` with its rights, and wakes the
    /// socket task so it re-arms its expiry deadline.
    pub fn record_subscription(
        &self,
        channel: Arc<dyn JoinedChannel>,
        publish: bool,
        expires_at: Option<Millis>,
    ) {
        let mut subs = lock(&self.subscriptions);
        match subs.iter_mut().find(|s| s.channel.name() == channel.name()) {
            Some(existing) => {
                existing.publish = publish;
                existing.expires_at = expires_at;
            }
            None => subs.push(Subscription {
                channel,
                publish,
                expires_at,
            }),
        }
        drop(subs);
        self.wake.notify_one();
    }

    /// Gives the subscription to `name` (if any) the rights of a grant the app just set:
    /// `publish`, until `expires_at`.
    pub fn renew_subscription(&self, name: &str, publish: bool, expires_at: Option<Millis>) {
        let mut subs = lock(&self.subscriptions);
        if let Some(sub) = subs.iter_mut().find(|s| &**s.channel.name() == name) {
            sub.publish = publish;
            sub.expires_at = expires_at;
        }
        drop(subs);
        self.wake.notify_one();
    }

    /// Forgets the subscription to `name`; returns its channel if there was one.
    pub fn forget_subscription(&self, name: &str) -> Option<Arc<dyn JoinedChannel>> {
        let mut subs = lock(&self.subscriptions);
        let pos = subs.iter().position(|s| &**s.channel.name() == name)?;
        Some(subs.swap_remove(pos).channel)
    }

    /// Ends the subscription to `name` on the server's initiative: leaves the channel (the
    /// others see the presence leave) and queues `unsubscribed` with `reason`. False when
    /// the socket was not subscribed.
    pub fn end_subscription(self: &Arc<Self>, name: &str, reason: &str) -> bool {
        let Some(channel) = self.forget_subscription(name) else {
            return false;
        };
        channel.unsubscribe(self);
        self.send(Utf8Bytes::from(
            serde_json::json!({"type": "unsubscribed", "channel": name, "reason": reason})
                .to_string(),
        ));
        true
    }

    /// The earliest grant expiry among the subscriptions.
    fn next_expiry(&self) -> Option<Millis> {
        lock(&self.subscriptions)
            .iter()
            .filter_map(|s| s.expires_at)
            .min()
    }

    /// Ends every subscription whose grant ran out at `now`.
    fn end_expired(self: &Arc<Self>, now: Millis) {
        let expired: Vec<Arc<str>> = lock(&self.subscriptions)
            .iter()
            .filter(|s| s.expires_at.is_some_and(|at| at <= now))
            .map(|s| s.channel.name().clone())
            .collect();
        for name in expired {
            self.end_subscription(&name, "grant_expired");
            metrics::counter!("sessiond_realtime_grant_expiries_total").increment(1);
        }
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        lock(&self.outbox).close.is_some()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which connection cap refused a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// `realtime.max_connections` (the whole process).
    Total,
    /// `realtime.max_connections_per_user`.
    User,
}

const SHARDS: usize = 32;

/// One shard of the registry: user id → that user's open sockets.
type Shard = Mutex<HashMap<Arc<str>, Vec<Arc<Conn>>>>;

/// The open sockets of every user, sharded by user id.
pub struct Connections {
    shards: Box<[Shard]>,
    total: AtomicU64,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            total: AtomicU64::new(0),
        }
    }
}

impl Connections {
    fn shard(&self, user: &str) -> MutexGuard<'_, HashMap<Arc<str>, Vec<Arc<Conn>>>> {
        // FNV-1a: cheap, and the shard only spreads lock contention (no adversarial concern:
        // a hot shard costs a little contention, never correctness).
        let mut h: u64 = 0xcbf29ce484222325;
        for b in user.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        lock(&self.shards[(h as usize) % self.shards.len()])
    }

    /// Registers `conn` unless the process already has `max_total` sockets or its user
    /// `per_user`; returns how many the user has now, or which cap refused it.
    pub fn add(&self, conn: &Arc<Conn>, per_user: usize, max_total: u64) -> Result<usize, Cap> {
        // Reserve a slot in the total first, so concurrent accepts cannot overshoot it.
        if self.total.fetch_add(1, Ordering::Relaxed) >= max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Cap::Total);
        }
        let mut map = self.shard(&conn.user_id);
        let list = map.entry(conn.user_id.clone()).or_default();
        if list.len() >= per_user {
            if list.is_empty() {
                map.remove(&conn.user_id);
            }
            drop(map);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Cap::User);
        }
        list.push(conn.clone());
        let n = list.len();
        drop(map);
        metrics::gauge!("sessiond_realtime_connections").increment(1.0);
        Ok(n)
    }

    /// Unregisters `conn`; returns how many sockets its user still has.
    pub fn remove(&self, conn: &Arc<Conn>) -> usize {
        let mut map = self.shard(&conn.user_id);
        let Some(list) = map.get_mut(&conn.user_id) else {
            return 0;
        };
        let before = list.len();
        list.retain(|c| !Arc::ptr_eq(c, conn));
        let removed = before - list.len();
        let left = list.len();
        if left == 0 {
            map.remove(&conn.user_id);
        }
        drop(map);
        if removed > 0 {
            self.total.fetch_sub(removed as u64, Ordering::Relaxed);
            metrics::gauge!("sessiond_realtime_connections").decrement(removed as f64);
        }
        left
    }

    /// The user's open sockets (a snapshot).
    pub fn of_user(&self, user: &str) -> Vec<Arc<Conn>> {
        self.shard(user).get(user).cloned().unwrap_or_default()
    }

    /// How many sockets the user has open.
    pub fn count(&self, user: &str) -> usize {
        self.shard(user).get(user).map_or(0, Vec::len)
    }

    /// Sends `frame` to every socket of `user`; returns how many got it queued.
    pub fn send_to_user(&self, user: &str, frame: &Utf8Bytes) -> usize {
        self.of_user(user)
            .iter()
            .filter(|c| c.send(frame.clone()))
            .count()
    }

    /// Asks every socket of `user` matching `filter` to close; returns how many.
    pub fn close_user(
        &self,
        user: &str,
        code: u16,
        reason: &str,
        filter: impl Fn(&Conn) -> bool,
    ) -> usize {
        let mut n = 0;
        for conn in self.of_user(user).iter().filter(|c| filter(c)) {
            conn.close(code, reason);
            n += 1;
        }
        n
    }

    /// Asks every socket to close; returns how many.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let all = self.all();
        for conn in &all {
            conn.close(code, reason);
        }
        all.len()
    }

    /// Every open socket (a snapshot).
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.shards
            .iter()
            .flat_map(|shard| lock(shard).values().flatten().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// The open socket with id `id` (a scan: for admin calls only).
    pub fn find(&self, id: u64) -> Option<Arc<Conn>> {
        self.shards
            .iter()
            .find_map(|shard| lock(shard).values().flatten().find(|c| c.id == id).cloned())
    }

    /// Open sockets in the process.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
