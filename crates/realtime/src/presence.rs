//! Presence on several nodes: who is connected, per user and per channel, cluster-wide.
//!
//! With a shared engine each socket is a leased member of the engine's presence sets (see
//! [`PresenceStore`]): `u:<user>` (the user's sockets, info = the socket's description),
//! `c:<channel>` (the channel's subscribers, info = user and meta) and `*` (every socket,
//! info = its user, to find a socket's user by id). Its node joins it at connect, leaves it
//! at close and renews the lease every `presence_ttl_s / 3`; a node that dies stops renewing,
//! so its sockets drop out of every read at most `presence_ttl_s` after its last renewal.
//!
//! - **Counts and transitions come from the engine.** The per-user socket limit, seed C's
//!   `online`/`offline` and `connectedDevices` read the user's live members; "first socket
//!   opened" / "last socket closed" are decided by the engine's script, so one node learns of
//!   each. That node debounces it and announces `user.online`/`user.offline` only if the
//!   engine agrees it is still the latest transition and differs from the last announced one
//!   ([`PresenceStore::settle`]): once per transition cluster-wide.
//! - **Dead nodes.** Every node sweeps expired members periodically; the engine hands each
//!   expired member to exactly one sweeper, which announces the user's `offline` (if that
//!   emptied the set) and signals the channel leaves to every node.
//! - **Channel metas.** Local joins, meta updates and leaves go through one queue per node:
//!   written to the engine, then signalled, in order (a `subscribed` or `presence_updated`
//!   reply waits until then, so what a client does next is ordered after it on every node). Other nodes apply the signals to their
//!   resident copy of the channel (`channels_remote`); a channel becoming resident loads the
//!   others' metas from the engine, with signals that arrive meanwhile applied after the load.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use sessiond_http::{ApiError, ApiResult};
use sessiond_store::{now_ms, Millis, PresenceMember, PresenceStore};
use tokio::sync::mpsc;

use crate::channels::remote::PresenceOp;
use crate::cluster::Action;
use crate::conn::{lock, Conn};
use crate::hub::{Hub, HubInner};
use crate::presence_sets::{channel_set, user_set, ClusterPresence, ALL};

/// Most sets one sweep looks at.
const SWEEP_SETS: usize = 1_000;

/// How a socket is described (connections API, the devices view, and its info in
/// `u:<user>`, where `last_frame_at` is as of the latest lease renewal).
pub fn conn_json(c: &Conn) -> Value {
    let active = c.active_at();
    json!({
        "id": c.id.to_string(),
        "device_id": &*c.device_id,
        "session_id": c.session_id.as_deref(),
        "connected_at": c.connected_at,
        "last_frame_at": (active > 0).then_some(active),
        "ip": c.ip.map(|ip| ip.to_string()),
        "user_agent": c.user_agent.as_deref(),
        "protocol": c.protocol,
        "channels": c.channel_names(),
    })
}

fn unavailable(e: sessiond_store::StoreError) -> ApiError {
    ApiError::from(e)
}

impl Hub {
    /// Runs presence cluster-wide on `store` (see [`crate::presence`]), leases of
    /// `presence_ttl_s`. Call once, after [`Hub::attach_bus`] and before serving.
    pub fn attach_presence(&self, store: Arc<dyn PresenceStore>) {
        let ttl_ms = (self.inner.config.presence_ttl_s.max(1) as Millis).saturating_mul(1000);
        let presence = ClusterPresence {
            store: store.clone(),
            ttl_ms,
            pending: std::sync::Mutex::new(HashMap::new()),
            done: tokio::sync::watch::Sender::new(0),
        };
        if self.inner.presence.set(presence).is_err() {
            return;
        }
        self.inner.events.settle_with(store);
        let (ops, rx) = mpsc::unbounded_channel();
        self.inner.channels.announce_to(ops);
        tokio::spawn(channel_ops(rx, Arc::downgrade(&self.inner)));
        tokio::spawn(renew_and_sweep(Arc::downgrade(&self.inner), ttl_ms));
    }
}

impl HubInner {
    /// Waits (at most 2 s) until this node's channel presence changes made so far are in
    /// the store and signalled, so a `subscribed` reply means "visible on every node".
    pub(crate) async fn presence_flushed(&self) {
        let Some(p) = self.presence.get() else {
            return;
        };
        let target = self.channels.announced();
        let mut done = p.done.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), done.wait_for(|d| *d >= target)).await;
    }

    /// Adds a new socket to the user's set within `limit`: `Ok(None)` when presence is per
    /// node, `Ok(Some((admitted, live, online transition)))` otherwise.
    pub(crate) async fn presence_join(
        &self,
        conn: &Conn,
        limit: usize,
    ) -> ApiResult<Option<sessiond_store::Joined>> {
        let Some(p) = self.presence.get() else {
            return Ok(None);
        };
        let now = now_ms();
        let member = PresenceMember {
            id: conn.id.to_string(),
            info: conn_json(conn).to_string(),
        };
        let set = user_set(&conn.user_id);
        let joined = p
            .store
            .join(&set, &member, now, p.ttl_ms, limit)
            .await
            .map_err(unavailable)?;
        if joined.admitted {
            let all = PresenceMember {
                id: member.id,
                info: conn.user_id.to_string(),
            };
            if let Err(e) = p.store.join(ALL, &all, now, p.ttl_ms, usize::MAX).await {
                let _ = p.store.leave(&set, &all.id, now).await;
                return Err(unavailable(e));
            }
        }
        Ok(Some(joined))
    }

    /// Removes a closed socket; `None` when presence is per node or the store failed (the
    /// lease then runs out and the sweep does the rest).
    pub(crate) async fn presence_leave(&self, conn: &Conn) -> Option<sessiond_store::Left> {
        let p = self.presence.get()?;
        let now = now_ms();
        let id = conn.id.to_string();
        let _ = p.store.leave(ALL, &id, now).await;
        match p.store.leave(&user_set(&conn.user_id), &id, now).await {
            Ok(left) => Some(left),
            Err(e) => {
                tracing::warn!(error = %e, user = %conn.user_id, "presence leave not recorded");
                None
            }
        }
    }

    /// How many sockets `user` has open: on every node, or on this one.
    pub(crate) async fn open_count(&self, user: &str) -> ApiResult<usize> {
        match self.presence.get() {
            Some(p) => Ok(p
                .store
                .members(&user_set(user), now_ms())
                .await
                .map_err(unavailable)?
                .len()),
            None => Ok(self.conns.count(user)),
        }
    }

    /// The user's sockets as the connections API lists them (this node's current, the
    /// others' as of their last renewal).
    pub(crate) async fn describe_connections(&self, user: &str) -> ApiResult<Vec<Value>> {
        let local: Vec<Value> = self
            .conns
            .of_user(user)
            .iter()
            .map(|c| conn_json(c))
            .collect();
        let Some(p) = self.presence.get() else {
            return Ok(local);
        };
        let members = p
            .store
            .members(&user_set(user), now_ms())
            .await
            .map_err(unavailable)?;
        let mut out = local;
        for m in members {
            if out.iter().any(|v| v["id"] == m.id.as_str()) {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(&m.info) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Closes the socket `id` wherever it is; false when no node has it.
    pub(crate) async fn close_anywhere(
        &self,
        id: &str,
        code: u16,
        reason: &str,
    ) -> ApiResult<bool> {
        if let Some(conn) = id.parse::<u64>().ok().and_then(|id| self.conns.find(id)) {
            conn.close(code, reason);
            return Ok(true);
        }
        let (Some(p), Some(cluster)) = (self.presence.get(), self.cluster.get()) else {
            return Ok(false);
        };
        let found = p
            .store
            .member(ALL, id, now_ms())
            .await
            .map_err(unavailable)?;
        if found.is_some() {
            cluster.signal(Action::CloseConn {
                id: id.to_string(),
                code,
                reason: reason.to_string(),
            });
        }
        Ok(found.is_some())
    }

    /// Loads the other nodes' subscribers of a channel being made resident (its mirror is
    /// loading; their signals meanwhile are held back and applied after).
    pub(crate) async fn load_remote_presence(&self, name: &str) -> sessiond_store::Result<()> {
        let Some(p) = self.presence.get() else {
            return Ok(());
        };
        lock(&p.pending).insert(name.to_string(), Vec::new());
        let members = p.store.members(&channel_set(name), now_ms()).await;
        let held = lock(&p.pending).remove(name).unwrap_or_default();
        let members = members?;
        let channel = self.channels.get_or_create(name);
        channel.load_remote(
            members
                .into_iter()
                .filter_map(|m| {
                    let v: Value = serde_json::from_str(&m.info).ok()?;
                    Some((m.id, v["user"].as_str()?.to_string(), v["meta"].clone()))
                })
                .collect(),
        );
        for (id, change) in held {
            channel.apply_remote(&id, change.as_ref().map(|(u, m)| (u.as_str(), m)));
        }
        Ok(())
    }

    /// A channel's presence (`{user: {"metas": [...]}}`) from the store, on several nodes.
    pub(crate) async fn cluster_presence(&self, channel: &str) -> ApiResult<Option<Value>> {
        let Some(p) = self.presence.get() else {
            return Ok(None);
        };
        let members = p
            .store
            .members(&channel_set(channel), now_ms())
            .await
            .map_err(unavailable)?;
        let mut by_user: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for m in members {
            if let Ok(mut v) = serde_json::from_str::<Value>(&m.info) {
                if let Some(user) = v["user"].as_str().map(str::to_string) {
                    by_user.entry(user).or_default().push(v["meta"].take());
                }
            }
        }
        let map: serde_json::Map<String, Value> = by_user
            .into_iter()
            .map(|(user, metas)| (user, json!({ "metas": metas })))
            .collect();
        Ok(Some(Value::Object(map)))
    }

    /// Another node's channel presence change.
    pub(crate) fn remote_presence(&self, channel: &str, id: &str, change: Option<(String, Value)>) {
        if let Some(p) = self.presence.get() {
            if let Some(held) = lock(&p.pending).get_mut(channel) {
                held.push((id.to_string(), change));
                return;
            }
        }
        if let Some(c) = self.channels.get(channel) {
            c.apply_remote(id, change.as_ref().map(|(u, m)| (u.as_str(), m)));
        }
    }
}

/// Writes this node's channel presence changes to the store and signals them, in order.
async fn channel_ops(mut rx: mpsc::UnboundedReceiver<PresenceOp>, hub: Weak<HubInner>) {
    while let Some(op) = rx.recv().await {
        let Some(inner) = hub.upgrade() else { return };
        let (Some(p), Some(cluster)) = (inner.presence.get(), inner.cluster.get()) else {
            return;
        };
        let set = channel_set(&op.channel);
        let id = op.id.to_string();
        let now = now_ms();
        let written = match &op.meta {
            Some(meta) => {
                let info = json!({"user": &*op.user, "meta": meta}).to_string();
                let member = PresenceMember {
                    id: id.clone(),
                    info,
                };
                p.store
                    .join(&set, &member, now, p.ttl_ms, usize::MAX)
                    .await
                    .map(|_| ())
            }
            None => p.store.leave(&set, &id, now).await.map(|_| ()),
        };
        if let Err(e) = written {
            metrics::counter!("sessiond_realtime_presence_failures_total").increment(1);
            tracing::warn!(error = %e, channel = %op.channel, "channel presence not written");
        }
        let signalled = cluster
            .signal_now(Action::Presence {
                channel: op.channel.to_string(),
                id,
                change: op.meta.map(|meta| (op.user.to_string(), meta)),
            })
            .await;
        if let Err(e) = signalled {
            metrics::counter!("sessiond_realtime_bus_signal_failures_total").increment(1);
            tracing::warn!(error = %e, channel = %op.channel, "channel presence not signalled");
        }
        p.done.send_modify(|d| *d += 1);
    }
}

/// Renews this node's leases every third of the TTL and sweeps expired members.
async fn renew_and_sweep(hub: Weak<HubInner>, ttl_ms: Millis) {
    let every = Duration::from_millis(u64::try_from(ttl_ms / 3).unwrap_or(1000).max(50));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = hub.upgrade() else { return };
        let Some(p) = inner.presence.get() else {
            return;
        };
        let store = p.store.clone();
        let mut batch: Vec<(String, PresenceMember)> = Vec::new();
        for conn in inner.conns.all() {
            let id = conn.id.to_string();
            batch.push((
                user_set(&conn.user_id),
                PresenceMember {
                    id: id.clone(),
                    info: conn_json(&conn).to_string(),
                },
            ));
            batch.push((
                ALL.to_string(),
                PresenceMember {
                    id,
                    info: conn.user_id.to_string(),
                },
            ));
        }
        for (channel, id, user, meta) in inner.channels.local_members() {
            let info = json!({"user": &*user, "meta": meta}).to_string();
            batch.push((
                channel_set(&channel),
                PresenceMember {
                    id: id.to_string(),
                    info,
                },
            ));
        }
        match store.refresh(&batch, now_ms(), ttl_ms).await {
            Ok(missing) => rejoin(&inner, batch, missing).await,
            Err(e) => {
                metrics::counter!("sessiond_realtime_presence_failures_total").increment(1);
                tracing::warn!(error = %e, "presence leases not renewed");
            }
        }
        let expired = match store.sweep(now_ms(), SWEEP_SETS).await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(error = %e, "presence sweep failed");
                continue;
            }
        };
        let hub = Hub {
            inner: inner.clone(),
        };
        for gone in expired {
            metrics::counter!("sessiond_realtime_presence_expired_total")
                .increment(gone.members.len() as u64);
            if let Some(user) = gone.set.strip_prefix("u:") {
                if let Some(generation) = gone.offline {
                    inner.events.transition(user, false, generation);
                }
            } else if let Some(channel) = gone.set.strip_prefix("c:") {
                for m in gone.members {
                    hub.act_everywhere(Action::Presence {
                        channel: channel.to_string(),
                        id: m.id,
                        change: None,
                    });
                }
            }
        }
    }
}

/// Joins again the members whose lease ran out before this node renewed it (a stalled node:
/// the others saw them leave), so presence matches this node's sockets again.
async fn rejoin(
    inner: &Arc<HubInner>,
    batch: Vec<(String, PresenceMember)>,
    missing: Vec<(String, String)>,
) {
    let Some(p) = inner.presence.get() else {
        return;
    };
    if missing.is_empty() {
        return;
    }
    metrics::counter!("sessiond_realtime_presence_rejoins_total").increment(missing.len() as u64);
    let now = now_ms();
    for (set, member) in batch {
        if !missing.iter().any(|(s, id)| *s == set && *id == member.id) {
            continue;
        }
        let joined = match p.store.join(&set, &member, now, p.ttl_ms, usize::MAX).await {
            Ok(joined) => joined,
            Err(e) => {
                tracing::warn!(error = %e, "presence rejoin failed");
                return;
            }
        };
        if let (Some(user), Some(generation)) = (set.strip_prefix("u:"), joined.online) {
            inner.events.transition(user, true, generation);
        }
        if let (Some(channel), Some(cluster)) = (set.strip_prefix("c:"), inner.cluster.get()) {
            if let Ok(v) = serde_json::from_str::<Value>(&member.info) {
                let user = v["user"].as_str().unwrap_or_default().to_string();
                cluster.signal(Action::Presence {
                    channel: channel.to_string(),
                    id: member.id,
                    change: Some((user, v["meta"].clone())),
                });
            }
        }
    }
}
