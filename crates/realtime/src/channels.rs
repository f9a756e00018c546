//! Channels ("rooms"): subscribers with presence metas, per-channel offsets and the in-memory
//! recovery history.
//!
//! One `std::sync::Mutex` per channel guards its subscribers, offsets and history, and every
//! frame of the channel — `subscribed` with its missed messages, `presence_state`,
//! `presence_diff`, `message` — is queued to the sockets while holding it. That single rule is
//! what makes recovery exact: a message is either in the history a subscriber is replayed
//! from, or delivered live after the `subscribed` reply, never both and never neither. Nothing
//! awaits under the lock (queuing is `try_send`), so holding it while fanning out to a
//! thousand sockets costs microseconds per socket.
//!
//! History is memory-only under a random **epoch**: when the channel is dropped (no
//! subscriber and no message younger than the window) or the process restarts, the epoch
//! changes and clients are told `recovered: false`.
//!
//! Memory is bounded in bytes, not only in counts: a channel's history is trimmed (oldest
//! first) to `recovery_max_bytes`, and all histories together to `history_max_bytes` — past
//! it the oldest messages of the whole process go first, down to 90% of the budget so the
//! cross-channel scan is rare. A client whose missed messages were dropped gets
//! `recovered: false`. Presence metas are counted the same way per channel and in total; a
//! meta that would exceed a budget is refused (`limit_reached`) rather than dropping others'.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Map, Value};
use sessiond_http::ids::random_id;
use sessiond_http::{ApiError, ApiResult};
use sessiond_store::{now_ms, Millis};

use crate::conn::{Conn, JoinedChannel};

// A channel mirroring a cluster-wide log (child module: it works on the channel's state).
#[path = "channels_mirror.rs"]
pub(crate) mod mirror;
use mirror::message_frame;
// Presence on several nodes, and the byte counts (child module: it works on the state too).
#[path = "channels_remote.rs"]
pub(crate) mod remote;
use remote::Usage;

/// How much history a channel keeps.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Always keep at least this many newest messages.
    pub messages: usize,
    /// Also keep every message younger than this.
    pub window: Duration,
    /// Never keep more than this many.
    pub max_messages: usize,
    /// Never keep more than this many bytes of one channel's history.
    pub max_bytes: usize,
}

/// Byte budgets shared by every channel of the process.
#[derive(Clone, Copy, Debug)]
pub struct Budgets {
    /// All histories together (bytes).
    pub history_bytes: usize,
    /// Presence metas of one channel (bytes).
    pub presence_bytes_per_channel: usize,
    /// Presence metas of all channels (bytes).
    pub presence_bytes: usize,
}

/// One published message.
struct Entry {
    offset: u64,
    ts: Millis,
    /// The serialized `message` frame.
    frame: Utf8Bytes,
}

/// One subscribed connection.
struct Subscriber {
    conn: Arc<Conn>,
    /// The connection's presence meta in this channel (server fields included).
    meta: Value,
    /// Its serialized size, counted against the presence budgets.
    meta_bytes: usize,
}

struct ChannelState {
    epoch: String,
    last_offset: u64,
    history: VecDeque<Entry>,
    /// Bytes of `history` (serialized frames).
    history_bytes: usize,
    subscribers: Vec<Subscriber>,
    /// Bytes of the subscribers' metas.
    presence_bytes: usize,
    /// When the channel was last subscribed to or published on.
    last_used: Millis,
    /// Other nodes' subscribers (cluster mode): connection id -> (user, meta).
    remote: BTreeMap<String, (Arc<str>, Value)>,
}

/// A client's recovery position.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Since {
    /// The epoch of the client's last `subscribed`.
    pub epoch: String,
    /// The last offset it processed.
    pub offset: u64,
}

/// One channel.
pub struct Channel {
    /// Its name.
    pub name: Arc<str>,
    state: Mutex<ChannelState>,
    usage: Arc<Usage>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        let st = lock(&self.state);
        self.usage.sub_history(st.history_bytes);
        self.usage.sub_presence(st.presence_bytes);
    }
}

impl JoinedChannel for Channel {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn unsubscribe(&self, conn: &Arc<Conn>) -> bool {
        Channel::unsubscribe(self, conn)
    }

    fn resend_presence(&self, conn: &Arc<Conn>) -> bool {
        Channel::resend_presence(self, conn)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serializes a frame.
fn frame(value: &Value) -> Utf8Bytes {
    Utf8Bytes::from(value.to_string())
}

/// The server-side fields of a connection's presence meta, merged over the client's.
fn meta_of(conn: &Conn, client_meta: Option<&Map<String, Value>>) -> Value {
    let mut meta = client_meta.cloned().unwrap_or_default();
    meta.insert("connId".into(), json!(conn.id.to_string()));
    meta.insert("deviceId".into(), json!(&*conn.device_id));
    meta.insert("joinedAt".into(), json!(now_ms()));
    Value::Object(meta)
}

/// `{user: {"metas": [meta]}}` for one connection.
fn one_meta(user: &str, meta: &Value) -> Value {
    json!({ user: { "metas": [meta] } })
}

impl ChannelState {
    fn presence(&self) -> Value {
        let mut by_user: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for sub in &self.subscribers {
            by_user
                .entry(&sub.conn.user_id)
                .or_default()
                .push(&sub.meta);
        }
        for (user, meta) in self.remote.values() {
            by_user.entry(user).or_default().push(meta);
        }
        let map: Map<String, Value> = by_user
            .into_iter()
            .map(|(user, metas)| (user.to_string(), json!({ "metas": metas })))
            .collect();
        Value::Object(map)
    }

    fn state_frame(&self, channel: &str) -> Utf8Bytes {
        frame(&json!({
            "type": "presence_state", "channel": channel, "presence": self.presence(),
        }))
    }

    /// Queues a `presence_diff` to the subscribers (but `except`); a lagging one gets a fresh
    /// `presence_state` later instead ([`Conn::send_presence`]).
    fn diff(&self, channel: &Arc<str>, joins: Value, leaves: Value, except: Option<u64>) {
        let diff = frame(&json!({
            "type": "presence_diff", "channel": &**channel, "joins": joins, "leaves": leaves,
        }));
        for sub in self
            .subscribers
            .iter()
            .filter(|s| Some(s.conn.id) != except)
        {
            sub.conn.send_presence(channel, diff.clone(), false);
        }
    }

    /// Records the message at `offset` (the next one) and queues it to every subscriber;
    /// returns how many got it.
    fn append(&mut self, entry: Entry, retention: &Retention, usage: &Usage) -> usize {
        let frame = entry.frame.clone();
        let ts = entry.ts;
        self.last_offset = entry.offset;
        self.last_used = ts.max(self.last_used);
        self.keep(entry, usage);
        self.trim(retention, ts, usage);
        self.subscribers
            .iter()
            .filter(|s| s.conn.send(frame.clone()))
            .count()
    }

    /// Adds `entry` to the history, counting its bytes.
    fn keep(&mut self, entry: Entry, usage: &Usage) {
        self.history_bytes += entry.frame.len();
        usage.add_history(entry.frame.len());
        self.history.push_back(entry);
    }

    fn trim(&mut self, retention: &Retention, now: Millis, usage: &Usage) {
        let window = retention.window.as_millis() as Millis;
        while let Some(front) = self.history.front() {
            let over_cap = self.history.len() > retention.max_messages
                || self.history_bytes > retention.max_bytes;
            let beyond_count = self.history.len() > retention.messages;
            if over_cap || (beyond_count && now - front.ts > window) {
                self.pop_oldest(usage);
            } else {
                break;
            }
        }
    }

    /// Drops the oldest kept message; returns its size.
    fn pop_oldest(&mut self, usage: &Usage) -> usize {
        let Some(entry) = self.history.pop_front() else {
            return 0;
        };
        let n = entry.frame.len();
        self.history_bytes -= n;
        usage.sub_history(n);
        n
    }

    /// Checks that a meta of `bytes` (replacing one of `replacing` bytes) fits the presence
    /// budgets.
    fn presence_fits(&self, bytes: usize, replacing: usize, usage: &Usage) -> ApiResult<()> {
        let limits = &usage.limits;
        let channel = self.presence_bytes - replacing + bytes;
        let total = usage
            .presence
            .load(Ordering::Relaxed)
            .saturating_sub(replacing)
            + bytes;
        if channel > limits.presence_bytes_per_channel || total > limits.presence_bytes {
            metrics::counter!("sessiond_realtime_presence_refused_total").increment(1);
            return Err(ApiError::limit(
                "presence metas are at their byte budget (realtime.presence_max_bytes_per_channel \
                 / presence_max_bytes)",
            ));
        }
        Ok(())
    }
}

/// What a subscribe did.
pub enum Subscribed {
    /// Now subscribed (the reply is queued).
    Yes,
    /// The connection was already subscribed (the reply is queued again, without presence).
    Already,
}

impl Channel {
    fn new(name: &str, usage: Arc<Usage>) -> Channel {
        Channel {
            name: Arc::from(name),
            state: Mutex::new(ChannelState {
                epoch: random_id()[..12].to_string(),
                last_offset: 0,
                history: VecDeque::new(),
                history_bytes: 0,
                subscribers: Vec::new(),
                presence_bytes: 0,
                last_used: now_ms(),
                remote: BTreeMap::new(),
            }),
            usage,
        }
    }

    /// Subscribes `conn` and queues, in order: the `subscribed` reply (with recovery when
    /// `since` is given), the `presence_state`; the other subscribers get a `presence_diff`.
    /// Refused (nothing queued) when its presence meta does not fit the byte budgets.
    pub fn subscribe(
        &self,
        conn: &Arc<Conn>,
        request_id: &Value,
        since: Option<&Since>,
        client_meta: Option<&Map<String, Value>>,
    ) -> ApiResult<Subscribed> {
        let mut st = lock(&self.state);
        st.last_used = now_ms();
        let already = st.subscribers.iter().any(|s| Arc::ptr_eq(&s.conn, conn));
        let meta = meta_of(conn, client_meta);
        let meta_bytes = meta.to_string().len();
        if !already {
            st.presence_fits(meta_bytes, 0, &self.usage)?;
        }
        let mut reply = json!({
            "type": "subscribed", "channel": &*self.name, "epoch": st.epoch,
            "offset": st.last_offset,
        });
        if !request_id.is_null() {
            reply["id"] = request_id.clone();
        }
        if let Some(since) = since {
            let first_kept = st.history.front().map_or(st.last_offset + 1, |e| e.offset);
            let recovered = since.epoch == st.epoch
                && since.offset <= st.last_offset
                && since.offset + 1 >= first_kept;
            let messages: Vec<Value> = if recovered {
                st.history
                    .iter()
                    .filter(|e| e.offset > since.offset)
                    .filter_map(|e| serde_json::from_str(e.frame.as_str()).ok())
                    .collect()
            } else {
                Vec::new()
            };
            reply["recovered"] = json!(recovered);
            reply["messages"] = json!(messages);
        }
        conn.send(frame(&reply));
        if already {
            return Ok(Subscribed::Already);
        }
        st.presence_bytes += meta_bytes;
        self.usage.add_presence(meta_bytes);
        self.usage.announce(&self.name, conn, Some(&meta));
        st.subscribers.push(Subscriber {
            conn: conn.clone(),
            meta: meta.clone(),
            meta_bytes,
        });
        conn.send_presence(&self.name, st.state_frame(&self.name), true);
        st.diff(
            &self.name,
            one_meta(&conn.user_id, &meta),
            json!({}),
            Some(conn.id),
        );
        Ok(Subscribed::Yes)
    }

    /// Removes `conn`; the others get a `presence_diff` leave. False if it was not subscribed.
    pub fn unsubscribe(&self, conn: &Arc<Conn>) -> bool {
        let mut st = lock(&self.state);
        let Some(pos) = st
            .subscribers
            .iter()
            .position(|s| Arc::ptr_eq(&s.conn, conn))
        else {
            return false;
        };
        let gone = st.subscribers.swap_remove(pos);
        self.usage.announce(&self.name, conn, None);
        st.presence_bytes -= gone.meta_bytes;
        self.usage.sub_presence(gone.meta_bytes);
        st.last_used = now_ms();
        st.diff(
            &self.name,
            json!({}),
            one_meta(&conn.user_id, &gone.meta),
            None,
        );
        true
    }

    /// Replaces `conn`'s presence meta (a leave of the old and a join of the new one). False
    /// when not subscribed; refused when the new meta does not fit the byte budgets.
    pub fn update_meta(
        &self,
        conn: &Arc<Conn>,
        client_meta: Option<&Map<String, Value>>,
    ) -> ApiResult<bool> {
        let mut st = lock(&self.state);
        let Some(pos) = st
            .subscribers
            .iter()
            .position(|s| Arc::ptr_eq(&s.conn, conn))
        else {
            return Ok(false);
        };
        let mut meta = meta_of(conn, client_meta);
        // The connection did not rejoin: keep its original join time.
        meta["joinedAt"] = st.subscribers[pos].meta["joinedAt"].clone();
        let bytes = meta.to_string().len();
        let replacing = st.subscribers[pos].meta_bytes;
        st.presence_fits(bytes, replacing, &self.usage)?;
        st.presence_bytes = st.presence_bytes - replacing + bytes;
        self.usage.sub_presence(replacing);
        self.usage.add_presence(bytes);
        st.subscribers[pos].meta_bytes = bytes;
        self.usage.announce(&self.name, conn, Some(&meta));
        let old = std::mem::replace(&mut st.subscribers[pos].meta, meta.clone());
        st.diff(
            &self.name,
            one_meta(&conn.user_id, &meta),
            one_meta(&conn.user_id, &old),
            None,
        );
        Ok(true)
    }

    /// Queues a fresh `presence_state` to `conn`, which dropped diffs of this channel while
    /// it lagged. False when it is not subscribed (any more).
    pub(crate) fn resend_presence(&self, conn: &Arc<Conn>) -> bool {
        let st = lock(&self.state);
        if !st.subscribers.iter().any(|s| Arc::ptr_eq(&s.conn, conn)) {
            return false;
        }
        conn.send_presence(&self.name, st.state_frame(&self.name), true);
        true
    }

    /// Whether `conn` is subscribed.
    pub fn has(&self, conn: &Arc<Conn>) -> bool {
        lock(&self.state)
            .subscribers
            .iter()
            .any(|s| Arc::ptr_eq(&s.conn, conn))
    }

    /// Publishes `data`: assigns the next offset, keeps it for recovery and queues it to
    /// every subscriber. Returns the offset and how many sockets got it.
    pub fn publish(&self, data: &Value, from: Option<&str>, retention: &Retention) -> (u64, usize) {
        let mut st = lock(&self.state);
        let now = now_ms();
        let offset = st.last_offset + 1;
        let frame = message_frame(&self.name, offset, data, from, now);
        let entry = Entry {
            offset,
            ts: now,
            frame,
        };
        let delivered = st.append(entry, retention, &self.usage);
        (offset, delivered)
    }

    /// The channel's presence (`{user: {"metas": [...]}}`).
    pub fn presence(&self) -> Value {
        lock(&self.state).presence()
    }

    /// The connections subscribed now.
    pub fn subscribers(&self) -> Vec<Arc<Conn>> {
        lock(&self.state)
            .subscribers
            .iter()
            .map(|s| s.conn.clone())
            .collect()
    }

    /// (time, offset) of the oldest kept message.
    fn oldest(&self) -> Option<(Millis, u64)> {
        lock(&self.state).history.front().map(|e| (e.ts, e.offset))
    }

    /// Bytes of history kept.
    pub fn history_bytes(&self) -> usize {
        lock(&self.state).history_bytes
    }

    /// True when nobody is subscribed and nothing in it is younger than the window.
    fn is_droppable(&self, retention: &Retention, now: Millis) -> bool {
        let st = lock(&self.state);
        st.subscribers.is_empty() && now - st.last_used > retention.window.as_millis() as Millis
    }
}

/// Every channel of this process.
pub struct Channels {
    map: Mutex<HashMap<Arc<str>, Arc<Channel>>>,
    /// History kept per channel.
    pub retention: Retention,
    usage: Arc<Usage>,
}

impl Channels {
    /// An empty registry.
    pub fn new(retention: Retention, budgets: Budgets) -> Channels {
        Channels {
            map: Mutex::new(HashMap::new()),
            retention,
            usage: Arc::new(Usage::new(budgets)),
        }
    }

    /// Bytes of history kept by all channels.
    pub fn history_bytes(&self) -> usize {
        self.usage.history.load(Ordering::Relaxed)
    }

    /// Bytes of presence metas of all channels.
    pub fn presence_bytes(&self) -> usize {
        self.usage.presence.load(Ordering::Relaxed)
    }

    /// Publishes `data` on `channel` (see [`Channel::publish`]), then holds all histories to
    /// the global byte budget.
    pub fn publish(&self, channel: &Channel, data: &Value, from: Option<&str>) -> (u64, usize) {
        let published = channel.publish(data, from, &self.retention);
        if self.history_bytes() > self.usage.limits.history_bytes {
            self.shed_history();
        }
        published
    }

    /// Drops the oldest messages of the whole process until the histories use at most 90% of
    /// `history_max_bytes` (channel locks are taken one at a time, never under the map's).
    fn shed_history(&self) {
        let target = self.usage.limits.history_bytes / 10 * 9;
        let channels: Vec<Arc<Channel>> = lock(&self.map).values().cloned().collect();
        let mut heap: BinaryHeap<Reverse<(Millis, u64, usize)>> = channels
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.oldest().map(|(ts, offset)| Reverse((ts, offset, i))))
            .collect();
        let mut dropped = 0u64;
        while self.history_bytes() > target {
            let Some(Reverse((_, offset, i))) = heap.pop() else {
                break;
            };
            let channel = &channels[i];
            let mut st = lock(&channel.state);
            // Still the oldest of that channel (nothing trimmed it meanwhile): drop it.
            if st.history.front().is_some_and(|e| e.offset == offset) {
                st.pop_oldest(&self.usage);
                dropped += 1;
            }
            if let Some(front) = st.history.front() {
                heap.push(Reverse((front.ts, front.offset, i)));
            }
        }
        metrics::counter!("sessiond_realtime_history_shed_total").increment(dropped);
    }

    /// The channel `name`, created (with a new epoch) if absent.
    pub fn get_or_create(&self, name: &str) -> Arc<Channel> {
        let mut map = lock(&self.map);
        if let Some(channel) = map.get(name) {
            // Touched under the map lock, so a concurrent sweep cannot drop the channel
            // between this lookup and the caller's subscribe or publish.
            lock(&channel.state).last_used = now_ms();
            return channel.clone();
        }
        let channel = Arc::new(Channel::new(name, self.usage.clone()));
        map.insert(channel.name.clone(), channel.clone());
        channel
    }

    /// The channel `name` if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Channel>> {
        lock(&self.map).get(name).cloned()
    }

    /// The names of the channels in memory (a snapshot, unordered).
    pub fn names(&self) -> Vec<Arc<str>> {
        lock(&self.map).keys().cloned().collect()
    }

    /// Number of channels in memory.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no channel is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops channels nobody subscribes to and nobody used within the window; returns how
    /// many.
    pub fn sweep(&self) -> usize {
        let now = now_ms();
        let mut map = lock(&self.map);
        let before = map.len();
        map.retain(|_, channel| !channel.is_droppable(&self.retention, now));
        before - map.len()
    }
}
