//! The hub on several nodes: channel messages and user-directed actions through the
//! engine's [`RealtimeBus`], so that a socket on any node sees what any node did.
//!
//! - **Channel messages.** A publish on any node goes to the bus, which assigns the offset
//!   under the channel's epoch and delivers the message to every node in offset order. Each
//!   node keeps its resident channels as mirrors of the log (see `channels_mirror`): loaded
//!   from the bus's history when a socket of this node first subscribes, then extended by the
//!   deliveries. While a mirror loads, deliveries for it are buffered and applied after the
//!   load, so none is lost or doubled. A publishing socket still gets its own `message`
//!   before its `published` reply: the publish waits (bounded) until the delivery reached
//!   this node.
//! - **User-directed actions** (seed frames to all of a user's devices, `notify`, closes for
//!   logout-all, session revocation, clear, server disconnect) are done locally and
//!   signalled to the other nodes, in order, through one queue per node.
//! - **Failure.** A delivery that does not extend a mirror (lost while the subscriber
//!   connection was down, or the channel's log expired and restarted) and every resubscription
//!   of the node's bus connection drop the affected mirrors and close their sockets with
//!   1013, so clients reconnect and recover by offset. A signal lost that way is lost (a
//!   logout also revokes the sessions, so the closed device cannot reconnect).
//!
//! Presence (channel metas, seed C online/offline, the user events, the per-user socket
//! limit) is cluster-wide through the engine's presence store: see `crate::presence`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use sessiond_http::ids::random_id;
use sessiond_http::{ApiError, ApiResult};
use sessiond_store::now_ms;
use sessiond_store::realtime::{BusEvent, BusListener, BusMessage, HistoryLimits, RealtimeBus};

use crate::channels::mirror::Applied;
use crate::cluster::{Action, Cluster, Envelope, Mirror};
use crate::conn::lock;
use crate::hub::{Hub, HubInner};
use crate::session_end::{EndReason, SessionEnded};

/// Every [`EndReason`], to read one back from its wire name.
const END_REASONS: [EndReason; 7] = [
    EndReason::Revoked,
    EndReason::LoggedOut,
    EndReason::Evicted,
    EndReason::ExpiredIdle,
    EndReason::ExpiredAbsolute,
    EndReason::Erased,
    EndReason::Rotated,
];

/// Close code when a node lost track of a channel's log (clients reconnect and recover).
pub const RESYNC_CLOSE: (u16, &str) = (1013, "Realtime bus resync");

/// How long a channel's cluster-wide log outlives its last publish or read (at least the
/// recovery window): a quiet channel keeps its epoch this long.
const LOG_TTL_MS: sessiond_store::Millis = 24 * 3_600_000;

/// How long a publish waits for its own delivery on this node.
const OWN_DELIVERY_WAIT: Duration = Duration::from_secs(2);

impl Hub {
    /// Runs the hub on several nodes: channel messages and user-directed actions go through
    /// `bus`, shared by every node (see [`crate::bus`]). Call once, before serving.
    pub fn attach_bus(&self, bus: Arc<dyn RealtimeBus>) {
        let c = &self.inner.config;
        let window_ms = (c.recovery_window_s as sessiond_store::Millis).saturating_mul(1000);
        let limits = HistoryLimits {
            keep: c.recovery_messages,
            window_ms,
            max: c.recovery_max_messages,
            ttl_ms: window_ms.max(LOG_TTL_MS),
        };
        if self.inner.cluster.set(Cluster::new(bus, limits)).is_ok() {
            if let Some(cluster) = self.inner.cluster.get() {
                let hub = Arc::downgrade(&self.inner);
                cluster.bus.listen(Arc::new(Listener(hub)));
            }
        }
    }
}

fn unavailable(e: sessiond_store::StoreError) -> ApiError {
    ApiError::from(e)
}

impl HubInner {
    /// Makes sure this node's copy of `name` mirrors the log (cluster mode only).
    pub(crate) async fn prepare_channel(&self, name: &str) -> ApiResult<()> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(());
        };
        // A mirror loaded before this node receives deliveries could miss some.
        let deadline = tokio::time::Instant::now() + OWN_DELIVERY_WAIT;
        while !cluster.ready.load(Ordering::Acquire) {
            let wait = cluster.applied.notified();
            if cluster.ready.load(Ordering::Acquire) {
                break;
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                return Err(unavailable(sessiond_store::StoreError::Unavailable(
                    "the realtime bus is not connected yet".into(),
                )));
            }
        }
        loop {
            let wait = cluster.applied.notified();
            {
                let mut mirrors = lock(&cluster.mirrors);
                match mirrors.get(name) {
                    Some(Mirror::Live) if self.channels.get(name).is_some() => return Ok(()),
                    Some(Mirror::Loading(_)) => {}
                    _ => {
                        mirrors.insert(name.to_string(), Mirror::Loading(Vec::new()));
                        break;
                    }
                }
            }
            // Another request is loading it: wait for that (bounded), then look again.
            let _ = tokio::time::timeout(OWN_DELIVERY_WAIT, wait).await;
        }
        let loaded = cluster
            .bus
            .history(name, 0, &random_id()[..12], now_ms(), &cluster.limits)
            .await;
        let loaded = match self.load_remote_presence(name).await {
            Ok(()) => loaded,
            Err(e) => Err(e),
        };
        let mut mirrors = lock(&cluster.mirrors);
        let buffered = match mirrors.remove(name) {
            Some(Mirror::Loading(buffered)) => buffered,
            _ => Vec::new(),
        };
        let history = match loaded {
            Ok(history) => history,
            Err(e) => {
                cluster.applied.notify_waiters();
                return Err(unavailable(e));
            }
        };
        let channel = self.channels.get_or_create(name);
        channel.load(
            &history.epoch,
            history.top,
            &history.messages,
            &self.channels.retention,
        );
        for message in &buffered {
            if self.channels.apply(&channel, message) == Applied::Gap {
                tracing::warn!(channel = name, "realtime bus: gap right after loading");
            }
        }
        mirrors.insert(name.to_string(), Mirror::Live);
        drop(mirrors);
        cluster.applied.notify_waiters();
        Ok(())
    }

    /// Publishes on `name`: through the bus on several nodes (returns once this node has
    /// delivered it, or after a bounded wait), else on the local channel. Returns the offset
    /// and how many sockets of this node got it.
    pub(crate) async fn publish(
        &self,
        name: &str,
        data: &Value,
        from: Option<&str>,
    ) -> ApiResult<(u64, usize)> {
        let Some(cluster) = self.cluster.get() else {
            let channel = self.channels.get_or_create(name);
            return Ok(self.channels.publish(&channel, data, from));
        };
        let payload = serde_json::json!({"data": data, "from": from}).to_string();
        let (_, offset) = cluster
            .bus
            .publish(
                name,
                &payload,
                &random_id()[..12],
                now_ms(),
                &cluster.limits,
            )
            .await
            .map_err(unavailable)?;
        let deadline = tokio::time::Instant::now() + OWN_DELIVERY_WAIT;
        loop {
            let wait = cluster.applied.notified();
            let live = matches!(lock(&cluster.mirrors).get(name), Some(Mirror::Live));
            let channel = self.channels.get(name).filter(|_| live);
            match channel {
                Some(c) if c.last_offset() < offset => {
                    if tokio::time::timeout_at(deadline, wait).await.is_err() {
                        return Ok((offset, 0));
                    }
                }
                Some(c) => return Ok((offset, c.subscriber_count())),
                None => return Ok((offset, 0)),
            }
        }
    }

    fn on_message(&self, cluster: &Cluster, message: &BusMessage) {
        let mut mirrors = lock(&cluster.mirrors);
        match mirrors.get_mut(&message.channel) {
            None => return,
            Some(Mirror::Loading(buffer)) => {
                buffer.push(message.clone());
                return;
            }
            Some(Mirror::Live) => {}
        }
        let Some(channel) = self.channels.get(&message.channel) else {
            mirrors.remove(&message.channel);
            return;
        };
        if self.channels.apply(&channel, message) == Applied::Gap {
            mirrors.remove(&message.channel);
            drop(mirrors);
            metrics::counter!("sessiond_realtime_bus_resyncs_total").increment(1);
            let (code, reason) = RESYNC_CLOSE;
            for conn in channel.subscribers() {
                conn.close(code, reason);
            }
        } else {
            drop(mirrors);
        }
        cluster.applied.notify_waiters();
    }

    /// Forgets mirrors of channels this node no longer holds (swept).
    pub(crate) fn prune_mirrors(&self) {
        if let Some(cluster) = self.cluster.get() {
            lock(&cluster.mirrors).retain(|name, mirror| {
                matches!(mirror, Mirror::Loading(_)) || self.channels.get(name).is_some()
            });
        }
    }

    fn on_resync(&self, cluster: &Cluster) {
        cluster.ready.store(true, Ordering::Release);
        let stale: Vec<String> = lock(&cluster.mirrors)
            .drain()
            .map(|(name, _)| name)
            .collect();
        let (code, reason) = RESYNC_CLOSE;
        for name in stale {
            if let Some(channel) = self.channels.get(&name) {
                for conn in channel.subscribers() {
                    conn.close(code, reason);
                }
            }
        }
        cluster.applied.notify_waiters();
    }

    fn on_signal(self: &Arc<Self>, cluster: &Cluster, payload: &str) {
        let Ok(envelope) = serde_json::from_str::<Envelope>(payload) else {
            metrics::counter!("sessiond_realtime_bus_bad_signals_total").increment(1);
            return;
        };
        if envelope.node == cluster.node {
            return;
        }
        Hub {
            inner: self.clone(),
        }
        .act(&envelope.action);
    }
}

impl Hub {
    /// Does `action` on this node's sockets; returns how many sockets it reached.
    pub(crate) fn act(&self, action: &Action) -> usize {
        let conns = &self.inner.conns;
        match action {
            Action::Frame {
                user,
                frame,
                seed_only,
            } => {
                let frame = axum::extract::ws::Utf8Bytes::from(frame.as_str());
                conns
                    .of_user(user)
                    .iter()
                    .filter(|c| !seed_only || c.protocol == "seed")
                    .filter(|c| c.send(frame.clone()))
                    .count()
            }
            Action::Close { user, code, reason } => conns.close_user(user, *code, reason, |_| true),
            Action::Presence {
                channel,
                id,
                change,
            } => {
                self.inner.remote_presence(channel, id, change.clone());
                0
            }
            Action::CloseConn { id, code, reason } => {
                match id.parse::<u64>().ok().and_then(|id| conns.find(id)) {
                    Some(conn) => {
                        conn.close(*code, reason);
                        1
                    }
                    None => 0,
                }
            }
            Action::Grant {
                user,
                channel,
                grant,
            } => {
                let mut n = 0;
                for conn in conns.of_user(user).iter().filter(|c| !c.is_service()) {
                    match grant {
                        Some((publish, expires_at)) => {
                            conn.renew_subscription(channel, *publish, *expires_at)
                        }
                        None => {
                            conn.end_subscription(channel, "grant_revoked");
                        }
                    }
                    n += 1;
                }
                n
            }
            Action::Ended {
                user,
                sessions,
                all,
                reason,
            } => {
                let Some(reason) = END_REASONS.into_iter().find(|r| r.wire() == reason) else {
                    return 0;
                };
                self.end_sessions_here(&SessionEnded {
                    user_id: user.clone(),
                    session_ids: sessions.clone(),
                    all: *all,
                    reason,
                })
            }
        }
    }

    /// Does `action` here and signals it to the other nodes.
    pub(crate) fn act_everywhere(&self, action: Action) -> usize {
        let here = self.act(&action);
        if let Some(cluster) = self.inner.cluster.get() {
            cluster.signal(action);
        }
        here
    }
}

/// The hub as this node's bus listener (weak: the bus must not keep a dropped hub alive).
struct Listener(Weak<HubInner>);

impl BusListener for Listener {
    fn deliver(&self, event: &BusEvent) {
        let Some(hub) = self.0.upgrade() else { return };
        let Some(cluster) = hub.cluster.get() else {
            return;
        };
        match event {
            BusEvent::Message(message) => hub.on_message(cluster, message),
            BusEvent::Signal(payload) => hub.on_signal(cluster, payload),
            BusEvent::Resync => hub.on_resync(cluster),
        }
    }
}

impl Hub {
    /// Closes the sockets the ended sessions authenticated (all of the user's when `all`),
    /// on this node and, through the bus, on every other one (see `end_sessions_here`).
    /// Returns how many were closed on this node.
    pub fn session_ended(&self, ended: &SessionEnded) -> usize {
        self.act_everywhere(Action::Ended {
            user: ended.user_id.clone(),
            sessions: ended.session_ids.clone(),
            all: ended.all,
            reason: ended.reason.wire().to_string(),
        })
    }
}
