//! What the hub keeps of the bus when it runs on several nodes: the actions it signals to
//! the other nodes, its signal queue and its mirrors of channel logs (see `bus` for how they
//! are used).
//!
//! Below the hub, whose state holds the [`Cluster`] and whose entry points signal
//! [`Action`]s; the behaviour that needs the hub (delivering to sockets, loading mirrors) is
//! in `bus`, above it.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sessiond_http::ids::random_id;
use sessiond_store::realtime::{BusMessage, HistoryLimits, RealtimeBus};
use tokio::sync::{mpsc, Notify};

/// A user-directed action, signalled to the other nodes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub(crate) enum Action {
    /// A text frame to every socket of `user` (`seed_only`: seed-protocol sockets only).
    Frame {
        user: String,
        frame: String,
        seed_only: bool,
    },
    /// Close every socket of `user` with `code`/`reason`.
    Close {
        user: String,
        code: u16,
        reason: String,
    },
    /// The app set (`Some((publish, expires_at))`) or revoked (`None`) `user`'s grant of
    /// `channel`: live subscriptions of the user's non-service sockets follow it.
    Grant {
        user: String,
        channel: String,
        grant: Option<(bool, Option<sessiond_store::Millis>)>,
    },
    /// Another node's subscriber `id` of `channel` joined or changed its meta (`Some((user,
    /// meta))`) or left (`None`).
    Presence {
        channel: String,
        id: String,
        change: Option<(String, Value)>,
    },
    /// Close the socket `id` (wherever it is) with `code`/`reason`.
    CloseConn {
        id: String,
        code: u16,
        reason: String,
    },
    /// Sessions of `user` ended (see [`SessionEnded`](crate::session_end::SessionEnded); `reason` is its wire name).
    Ended {
        user: String,
        sessions: Vec<String>,
        all: bool,
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) node: String,
    pub(crate) action: Action,
}

/// How far a node's mirror of one channel is.
pub(crate) enum Mirror {
    /// Loading from history; deliveries meanwhile are kept here.
    Loading(Vec<BusMessage>),
    /// Loaded and extended by every delivery.
    Live,
}

/// The hub's side of the bus.
pub(crate) struct Cluster {
    pub(crate) bus: Arc<dyn RealtimeBus>,
    pub(crate) node: String,
    pub(crate) limits: HistoryLimits,
    pub(crate) mirrors: Mutex<HashMap<String, Mirror>>,
    pub(crate) applied: Notify,
    /// The bus has delivered its first `Resync` (this node receives deliveries).
    pub(crate) ready: AtomicBool,
    signals: mpsc::UnboundedSender<String>,
}

impl Cluster {
    /// Starts the signal queue of this node.
    pub(crate) fn new(bus: Arc<dyn RealtimeBus>, limits: HistoryLimits) -> Cluster {
        let (signals, mut rx) = mpsc::unbounded_channel::<String>();
        let out = bus.clone();
        tokio::spawn(async move {
            while let Some(payload) = rx.recv().await {
                if let Err(e) = out.signal(&payload).await {
                    metrics::counter!("sessiond_realtime_bus_signal_failures_total").increment(1);
                    tracing::warn!(error = %e, "realtime signal not sent to the other nodes");
                }
            }
        });
        Cluster {
            bus,
            node: random_id(),
            limits,
            mirrors: Mutex::new(HashMap::new()),
            applied: Notify::new(),
            ready: AtomicBool::new(false),
            signals,
        }
    }

    /// Tells the other nodes to do `action` (already done on this one).
    pub(crate) fn signal(&self, action: Action) {
        if let Some(payload) = self.envelope(action) {
            let _ = self.signals.send(payload);
        }
    }

    /// Like [`signal`](Self::signal), but sent now, outside the queue: returns once the
    /// engine has it (for callers that order their own signals).
    pub(crate) async fn signal_now(&self, action: Action) -> sessiond_store::Result<()> {
        match self.envelope(action) {
            Some(payload) => self.bus.signal(&payload).await,
            None => Ok(()),
        }
    }

    fn envelope(&self, action: Action) -> Option<String> {
        let envelope = Envelope {
            node: self.node.clone(),
            action,
        };
        serde_json::to_string(&envelope).ok()
    }
}
