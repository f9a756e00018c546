//! User online/offline events: debounced per user, delivered to sinks (webhook, stream).
//!
//! What app backends ask realtime servers for most is "tell me when a user goes offline" —
//! per *user*, not per socket, and not for a tab reload. So the hub reports every transition
//! (first socket opened, last socket closed) here, and an event is emitted only if the new
//! state still holds `debounce_ms` later and differs from the last state emitted for that
//! user. Because the debounce is one constant, deadlines come in insertion order and a FIFO
//! queue is the whole timer structure.
//!
//! On several nodes the transitions come from the engine's presence store with a generation
//! (see `crate::presence`): the node that saw one debounces it, and at the deadline asks the
//! store whether it is still the latest and not yet announced ([`PresenceStore::settle`]), so
//! one node announces it and a reload across nodes announces nothing.
//!
//! Emitted events go to every [`EventSink`] through that sink's own bounded queue and delivery
//! task, in order per sink: the webhook sink retries with exponential backoff, so a slow or
//! dead receiver delays its own later events rather than reordering them — and never the
//! other sinks (a dead webhook costs up to a minute per event; the presence stream must not
//! wait for it). A full queue drops that sink's events with a warning and a metric (a backend
//! that was down that long must resync anyway).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use sessiond_http::ids::random_id;
use sessiond_store::{now_ms, Millis, PresenceStore};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::EventsConfig;

/// Events waiting for delivery to one sink before new ones are dropped.
const DELIVERY_QUEUE: usize = 10_000;

/// One online/offline event (the webhook body and the stream entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserEvent {
    /// Unique id (receivers deduplicate by it).
    pub id: String,
    /// `user.online` or `user.offline`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The user.
    pub user_id: String,
    /// When the state changed (before the debounce), unix ms.
    pub at: Millis,
}

/// Why a sink could not deliver an event: whatever its transport reports (a webhook's
/// `WebhookError`, a stream's error), logged and counted, never shown to a client.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where events go.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &str;
    /// Delivers one event; `Err` when it could not (the sink does its own retries).
    async fn deliver(&self, event: &UserEvent) -> Result<(), SinkError>;
}

/// A transition reported by the hub.
struct Change {
    user: String,
    online: bool,
    at: Millis,
    /// The engine's generation of the transition (several nodes).
    cluster: Option<u64>,
}

/// The presence store that settles transitions (several nodes), once attached.
type Settler = Arc<OnceLock<Arc<dyn PresenceStore>>>;

/// The hub's handle: reports transitions to the debouncer.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Change>,
    settler: Settler,
}

impl Events {
    /// Starts the debouncer and the delivery task over `sinks`.
    pub fn start(config: &EventsConfig, sinks: Vec<Arc<dyn EventSink>>) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        let queues = sinks
            .into_iter()
            .map(|sink| {
                let (deliver_tx, deliver_rx) = mpsc::channel(DELIVERY_QUEUE);
                let name = sink.name().to_string();
                tokio::spawn(delivery_loop(deliver_rx, sink));
                (name, deliver_tx)
            })
            .collect();
        let debounce = Duration::from_millis(config.debounce_ms);
        let settler = Settler::default();
        tokio::spawn(debounce_loop(rx, queues, debounce, settler.clone()));
        Events { tx, settler }
    }

    /// The user's first socket opened (`online`) or last socket closed (`!online`).
    pub fn changed(&self, user: &str, online: bool) {
        let _ = self.tx.send(Change {
            user: user.to_string(),
            online,
            at: now_ms(),
            cluster: None,
        });
    }

    /// A cluster-wide transition the engine reported to this node (see
    /// [`crate::presence`]).
    pub fn transition(&self, user: &str, online: bool, generation: u64) {
        let _ = self.tx.send(Change {
            user: user.to_string(),
            online,
            at: now_ms(),
            cluster: Some(generation),
        });
    }

    /// Settles cluster-wide transitions through `store` from now on.
    pub fn settle_with(&self, store: Arc<dyn PresenceStore>) {
        let _ = self.settler.set(store);
    }
}

/// A pending (not yet emitted) state of one user.
struct Pending {
    online: bool,
    at: Millis,
    generation: u64,
    cluster: Option<u64>,
}

/// Queues `event` to every sink.
fn emit(sinks: &[(String, mpsc::Sender<UserEvent>)], event: UserEvent) {
    metrics::counter!("sessiond_realtime_user_events_total", "type" => event.kind).increment(1);
    for (name, queue) in sinks {
        if queue.try_send(event.clone()).is_err() {
            metrics::counter!("sessiond_realtime_user_events_dropped_total", "sink" => name.clone()).increment(1);
            tracing::warn!(sink = %name, "user event queue full; event dropped");
        }
    }
}

fn event(user: String, online: bool, at: Millis) -> UserEvent {
    UserEvent {
        id: random_id(),
        kind: if online {
            "user.online"
        } else {
            "user.offline"
        },
        user_id: user,
        at,
    }
}

async fn debounce_loop(
    mut rx: mpsc::UnboundedReceiver<Change>,
    sinks: Vec<(String, mpsc::Sender<UserEvent>)>,
    debounce: Duration,
    settler: Settler,
) {
    let sinks = Arc::new(sinks);
    // Users whose last emitted state is online (absent = offline), pending states, and the
    // deadlines in order.
    let mut emitted_online: HashSet<String> = HashSet::new();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut deadlines: VecDeque<(Instant, String, u64)> = VecDeque::new();
    let mut generation = 0u64;
    loop {
        let next = deadlines.front().map(|(at, _, _)| *at);
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { return };
                let was_online = emitted_online.contains(&change.user);
                // (cluster transitions are compared with the engine's state at the deadline)
                if change.cluster.is_none() && change.online == was_online {
                    // Back to what the backend already knows: nothing to say.
                    pending.remove(&change.user);
                    continue;
                }
                generation += 1;
                deadlines.push_back((Instant::now() + debounce, change.user.clone(), generation));
                pending.insert(change.user, Pending { online: change.online, at: change.at, generation, cluster: change.cluster });
            }
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let Some((_, user, gen)) = deadlines.pop_front() else { continue };
                let due = pending.get(&user).is_some_and(|p| p.generation == gen);
                let Some(state) = due.then(|| pending.remove(&user)).flatten() else { continue };
                if let Some(cluster) = state.cluster {
                    let (Some(store), sinks) = (settler.get().cloned(), sinks.clone()) else { continue };
                    tokio::spawn(async move {
                        match store.settle(&crate::presence_sets::user_set(&user), cluster, state.online).await {
                            Ok(true) => emit(&sinks, event(user, state.online, state.at)),
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, user = %user, "user event not settled"),
                        }
                    });
                    continue;
                }
                if state.online {
                    emitted_online.insert(user.clone());
                } else {
                    emitted_online.remove(&user);
                }
                emit(&sinks, event(user, state.online, state.at));
            }
        }
    }
}

/// Delivers one sink's events in order.
async fn delivery_loop(mut rx: mpsc::Receiver<UserEvent>, sink: Arc<dyn EventSink>) {
    while let Some(event) = rx.recv().await {
        if let Err(e) = sink.deliver(&event).await {
            metrics::counter!("sessiond_realtime_user_event_failures_total").increment(1);
            tracing::warn!(sink = sink.name(), user = %event.user_id, error = %e, "user event not delivered");
        }
    }
}
