//! A channel's presence on several nodes, and the process-wide byte counts.
//!
//! Each node holds only its own subscribers; the others' metas live in the engine's presence
//! store and reach this node as signals (see `crate::presence`). A resident channel keeps
//! them in `remote`, under the channel's lock like everything else, so `presence_state` and
//! the `presence_diff`s a socket gets from local and remote changes come in one order.
//! Local changes are announced through one queue per node ([`PresenceOp`]), written to the
//! store and signalled in that order.
//!
//! Remote metas do not count against this node's presence budgets: they are their own
//! node's.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{lock, one_meta, Budgets, Channel, Channels};
use crate::conn::Conn;

/// A local subscriber joined, changed its meta (`Some`) or left (`None`).
pub(crate) struct PresenceOp {
    pub(crate) channel: Arc<str>,
    pub(crate) id: u64,
    pub(crate) user: Arc<str>,
    pub(crate) meta: Option<Value>,
}

/// The process-wide byte counts, their gauges, and the cluster's presence queue.
pub(super) struct Usage {
    pub(super) limits: Budgets,
    pub(super) history: AtomicUsize,
    pub(super) presence: AtomicUsize,
    history_gauge: metrics::Gauge,
    presence_gauge: metrics::Gauge,
    ops: OnceLock<mpsc::UnboundedSender<PresenceOp>>,
    /// Changes queued to `ops` so far.
    queued: AtomicU64,
}

impl Usage {
    pub(super) fn new(limits: Budgets) -> Usage {
        Usage {
            limits,
            history: AtomicUsize::new(0),
            presence: AtomicUsize::new(0),
            history_gauge: metrics::gauge!("sessiond_realtime_history_bytes"),
            presence_gauge: metrics::gauge!("sessiond_realtime_presence_bytes"),
            ops: OnceLock::new(),
            queued: AtomicU64::new(0),
        }
    }

    pub(super) fn add_history(&self, n: usize) {
        let now = self.history.fetch_add(n, Ordering::Relaxed) + n;
        self.history_gauge.set(now as f64);
    }

    pub(super) fn sub_history(&self, n: usize) {
        let now = self
            .history
            .fetch_sub(n, Ordering::Relaxed)
            .saturating_sub(n);
        self.history_gauge.set(now as f64);
    }

    pub(super) fn add_presence(&self, n: usize) {
        let now = self.presence.fetch_add(n, Ordering::Relaxed) + n;
        self.presence_gauge.set(now as f64);
    }

    pub(super) fn sub_presence(&self, n: usize) {
        let now = self
            .presence
            .fetch_sub(n, Ordering::Relaxed)
            .saturating_sub(n);
        self.presence_gauge.set(now as f64);
    }

    /// Queues a local presence change for the other nodes (cluster mode only).
    pub(super) fn announce(&self, channel: &Arc<str>, conn: &Conn, meta: Option<&Value>) {
        if let Some(ops) = self.ops.get() {
            self.queued.fetch_add(1, Ordering::SeqCst);
            let _ = ops.send(PresenceOp {
                channel: channel.clone(),
                id: conn.id,
                user: conn.user_id.clone(),
                meta: meta.cloned(),
            });
        }
    }
}

impl Channel {
    /// Another node's subscriber `id` joined or changed its meta (`Some`) or left (`None`):
    /// the local subscribers get the `presence_diff`.
    pub(crate) fn apply_remote(&self, id: &str, change: Option<(&str, &Value)>) {
        let mut st = lock(&self.state);
        let (joins, leaves) = match change {
            Some((user, meta)) => {
                let old = st
                    .remote
                    .insert(id.to_string(), (Arc::from(user), meta.clone()));
                let leaves = old.map_or_else(|| json!({}), |(u, m)| one_meta(&u, &m));
                (one_meta(user, meta), leaves)
            }
            None => match st.remote.remove(id) {
                Some((user, meta)) => (json!({}), one_meta(&user, &meta)),
                None => return,
            },
        };
        st.diff(&self.name, joins, leaves, None);
    }

    /// Replaces the other nodes' subscribers with `members` ((id, user, meta)), silently: a
    /// (re)loaded channel has no socket that saw the previous ones.
    pub(crate) fn load_remote(&self, members: Vec<(String, String, Value)>) {
        let mut st = lock(&self.state);
        let local: Vec<String> = st
            .subscribers
            .iter()
            .map(|s| s.conn.id.to_string())
            .collect();
        st.remote = members
            .into_iter()
            .filter(|(id, _, _)| !local.contains(id))
            .map(|(id, user, meta)| (id, (Arc::from(user.as_str()), meta)))
            .collect();
    }
}

impl Channels {
    /// Routes local presence changes to `ops` from now on (cluster mode).
    pub(crate) fn announce_to(&self, ops: mpsc::UnboundedSender<PresenceOp>) {
        let _ = self.usage.ops.set(ops);
    }

    /// How many local changes were queued so far: once the queue has processed that many,
    /// every change queued before this call is written and signalled.
    pub(crate) fn announced(&self) -> u64 {
        self.usage.queued.load(Ordering::SeqCst)
    }

    /// Every local subscriber: (channel, connection id, user, meta).
    pub(crate) fn local_members(&self) -> Vec<(Arc<str>, u64, Arc<str>, Value)> {
        let channels: Vec<Arc<Channel>> = lock(&self.map).values().cloned().collect();
        let mut out = Vec::new();
        for channel in channels {
            let st = lock(&channel.state);
            for sub in &st.subscribers {
                out.push((
                    channel.name.clone(),
                    sub.conn.id,
                    sub.conn.user_id.clone(),
                    sub.meta.clone(),
                ));
            }
        }
        out
    }
}
