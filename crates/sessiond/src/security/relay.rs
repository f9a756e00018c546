//! Moves queued security events from the engine's outbox into the security streams.
//!
//! One pass: read a batch, append each stream's events (the user's stream when it has one, a
//! derived copy to the global stream) as one request per stretch of one outbox queue's events
//! (the user's stream, in `at` order) or per outbox queue (the global stream, which many
//! queues feed on Redis; see `delivery.rs`), then remove the batch from the outbox. A crash
//! (or another node's relay) between the appends and the removal makes the next pass see the
//! same events again; it skips those the stream has (by the producer's epoch, see
//! `delivery.rs`), so each event is in each of its streams exactly once. The relay wakes when
//! the session service queued something (`SecurityEvents::queued`) and every second anyway
//! (events queued by another node, or left by a crash).
//!
//! Why a lease: on an engine several nodes share, every node's relay would read the whole
//! outbox and append to the same streams; they would keep refusing each other's copies and
//! reloading the streams' producer state, round trips on every node for every event. So a
//! background pass moves events only while this node holds the engine's relay lease
//! (`Outbox::outbox_lease`, TTL `security.relay_lease_ms`), taken or renewed before each
//! batch; the other nodes' relays only try to take it as they wake. A holder that dies is
//! replaced once its lease ran out: events queued meanwhile wait in the outbox (late by about
//! the TTL, never lost). The lease is for cost, not for correctness: a holder paused past its
//! TTL may still be appending when the next one starts, and an export's or erasure's
//! [`Relay::flush`] runs on whatever node serves it, lease or not; such overlapping relays are
//! safe because the epoch guard above refuses every second copy.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use sessiond_sessions::security::{Envelope, SecurityConfig, SecurityEvents, GLOBAL_STREAM};
use sessiond_store::{Outbox, OutboxItem};
use sessiond_streams::Streams;

use super::copies::{Copies, Fields};
use super::delivery::{self, Event, Known, Run};
use super::route::StreamNames;
use super::Secrets;

/// Why a relay pass stopped; what it had not relayed stays queued for the next pass.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The outbox or the user secrets could not be read or written.
    #[error(transparent)]
    Store(#[from] sessiond_store::StoreError),
    /// A security stream refused the events.
    #[error("cannot write the security stream {stream}: {source}")]
    Stream {
        /// The stream.
        stream: String,
        /// Its answer.
        #[source]
        source: sessiond_streams::error::StreamError,
    },
    /// An outbox queue name that cannot be a `Producer-Id` header (an engine bug).
    #[error("outbox queue {0:?} is not a valid Producer-Id")]
    QueueName(String),
    /// A task of the pass panicked or was cancelled.
    #[error("a relay task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A stream's delivery panicked.
    #[error("a security stream's delivery panicked")]
    Panicked,
}

/// A pass that a request waits for (export, erasure) fails as the storage failure behind it
/// would on any route (`sessiond_http::error`).
impl From<RelayError> for sessiond_http::ApiError {
    fn from(e: RelayError) -> Self {
        match e {
            RelayError::Store(e) => e.into(),
            RelayError::Stream { source, .. } => *source.api,
            other => sessiond_http::ApiError::internal(other),
        }
    }
}

/// How often the relay looks at the outbox when nothing woke it.
const POLL: Duration = Duration::from_secs(1);
/// The relay. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    outbox: Arc<dyn Outbox>,
    streams: Streams,
    secrets: Secrets,
    events: SecurityEvents,
    /// Streams known to exist and their producers' epochs (`delivery.rs`).
    known: Known,
    /// user id → the user's stream name (a hash per event otherwise).
    user_streams: StreamNames,
    /// One pass at a time (the background loop and an erasure's flush).
    pass: Arc<tokio::sync::Mutex<()>>,
    /// This relay's name as a relay lease holder (unique per process start).
    holder: Arc<str>,
}

/// Which pass [`Relay::relay`] makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The background loop's: with the lease, up to a short read.
    Background,
    /// The last one at shutdown: with the lease, until the outbox is empty.
    Final,
    /// [`Relay::flush`]'s (export, erasure): until the outbox is empty, lease or not.
    Flush,
}

impl Relay {
    /// A relay from `outbox` into `streams`.
    pub fn new(
        outbox: Arc<dyn Outbox>,
        streams: Streams,
        secrets: Secrets,
        events: SecurityEvents,
    ) -> Self {
        Relay {
            outbox,
            streams,
            secrets,
            events,
            known: Known::default(),
            user_streams: StreamNames::default(),
            pass: Arc::default(),
            holder: holder_name().into(),
        }
    }

    fn config(&self) -> &SecurityConfig {
        self.events.config()
    }

    /// The streams capability the events go to.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// The per-user secrets.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Relays until `stop` resolves (then once more, so nothing acknowledged waits for the
    /// next start).
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let queued = self.events.queued();
        let every = Duration::from_millis(self.config().refused_summary_ms.max(1));
        let mut summaries = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        summaries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(e) = self.relay(Pass::Background).await {
                tracing::warn!(error = %e, "cannot relay security events; will retry");
            }
            tokio::select! {
                // Stopping wins over a due summary or a wake-up that is ready too.
                biased;
                _ = &mut stop => break,
                _ = queued.notified() => {
                    // Let a burst gather: one pass (one engine commit) for all of it, instead
                    // of one per change competing with the changes' own commits.
                    let linger = Duration::from_millis(self.config().relay_linger_ms);
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(linger) => {}
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
                // Queued like any event; the pass it wakes writes it.
                _ = summaries.tick() => self.events.summarize_refused_requests().await,
            }
        }
        self.events.summarize_refused_requests().await;
        if let Err(e) = self.relay(Pass::Final).await {
            tracing::warn!(error = %e, "cannot relay security events at shutdown; they stay queued");
        }
        // Another node takes over now rather than after the TTL.
        if let Err(e) = self.outbox.outbox_lease_release(&self.holder).await {
            tracing::warn!(error = %e, "cannot release the relay lease; it expires by itself");
        }
        metrics::gauge!("sessiond_security_relay_lease_held").set(0.0);
    }

    /// Relays everything queued now (lease or not: see the module docs).
    pub async fn flush(&self) -> Result<(), RelayError> {
        self.relay(Pass::Flush).await
    }

    /// Takes or renews the relay lease: true while this node holds it.
    async fn lease(&self) -> Result<bool, RelayError> {
        let ttl_ms = self.config().relay_lease_ms.max(1);
        let held = self.outbox.outbox_lease(&self.holder, ttl_ms).await?;
        metrics::gauge!("sessiond_security_relay_lease_held").set(f64::from(u8::from(held)));
        Ok(held)
    }

    /// Relays batch after batch until the outbox is empty; a background or final pass only
    /// while this node holds the relay lease, and a background pass also stops at a read that
    /// returns less than a full batch. Why the background loop stops there: what a short read
    /// left is what arrived during the pass, a trickle at low load; relayed at once it made a
    /// pass (a global append, an outbox removal and their commits) per change or two instead
    /// of one per `relay_linger_ms`, which the wake-up after the linger provides.
    async fn relay(&self, pass: Pass) -> Result<(), RelayError> {
        let _pass = self.pass.lock().await;
        let limit = self.config().relay_batch.max(1);
        loop {
            if pass != Pass::Flush && !self.lease().await? {
                return Ok(());
            }
            let batch = self.outbox.outbox_read(limit).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let full = batch.len() >= limit;
            let InOrder { queued, keys } = in_delivery_order(batch, |u| self.user_stream(u));
            let refs = self.user_refs(&queued).await?;
            let mut per_stream: BTreeMap<String, Vec<Run>> = BTreeMap::new();
            for q in queued {
                let user_ref = q.user_id.as_ref().and_then(|user| refs.get(user));
                let Copies { user, global, .. } = q.copies;
                if let Some(stream) = q.destination {
                    let event = Event {
                        position: q.position,
                        body: user,
                    };
                    delivery::push(per_stream.entry(stream).or_default(), &q.queue, event);
                }
                let event = Event {
                    position: q.position,
                    body: global.finish(user_ref.map(String::as_str)),
                };
                // By queue, not by `at`: one request per queue (`push_per_queue`).
                let runs = per_stream.entry(GLOBAL_STREAM.to_string()).or_default();
                delivery::push_per_queue(runs, &q.queue, event);
            }
            // Streams concurrently, so the engine commits them together (one SQLite
            // transaction); one stream's events in order (see `deliver`). In this task, not a
            // task per stream: spawning one cost about as much as the relay's other per-stream
            // work. A panic fails the pass (the events stay queued), as a task's did.
            let mut appends: FuturesUnordered<_> = per_stream
                .into_iter()
                .map(|(stream, runs)| {
                    AssertUnwindSafe(async move { self.deliver(&stream, runs).await })
                        .catch_unwind()
                })
                .collect();
            while let Some(done) = appends.next().await {
                done.map_err(|_| RelayError::Panicked)??;
            }
            self.outbox.outbox_remove(&keys).await?;
            metrics::counter!("sessiond_security_events_relayed_total")
                .increment(keys.len() as u64);
            if pass == Pass::Background && !full {
                return Ok(());
            }
        }
    }

    /// The `user_ref` of every user of `queued`, looked up concurrently (a new user's secret
    /// is a write: many of them share one engine commit).
    async fn user_refs(
        &self,
        queued: &[Queued],
    ) -> Result<std::collections::HashMap<String, String>, RelayError> {
        let users: HashSet<&String> = queued.iter().filter_map(|q| q.user_id.as_ref()).collect();
        let mut refs = std::collections::HashMap::new();
        if users.is_empty() {
            return Ok(refs);
        }
        // After the batch was read: an erasure before it empties the cache (secrets docs).
        self.secrets.revalidate().await?;
        let mut lookups = tokio::task::JoinSet::new();
        for user in users {
            // Most users' refs are in memory: no task for them.
            if let Some(user_ref) = self.secrets.cached_user_ref(user) {
                refs.insert(user.clone(), user_ref);
                continue;
            }
            let (secrets, user) = (self.secrets.clone(), user.clone());
            lookups.spawn(async move {
                let user_ref = secrets.user_ref(&user).await;
                (user, user_ref)
            });
        }
        while let Some(done) = lookups.join_next().await {
            let (user, user_ref) = done?;
            refs.insert(user, user_ref?);
        }
        Ok(refs)
    }

    /// The name of `user`'s stream, remembered.
    fn user_stream(&self, user: &str) -> String {
        self.user_streams.of(user)
    }

    /// The route that writes users' copies in their changes' transactions (`route.rs`),
    /// sharing this relay's memory of stream names.
    pub(super) fn user_copies(&self) -> super::route::UserCopies {
        super::route::UserCopies::new(
            self.config(),
            self.user_streams.clone(),
            self.secrets.clone(),
        )
    }

    /// What the relay knows of the streams it wrote.
    pub(super) fn known(&self) -> &Known {
        &self.known
    }

    /// The headers of the relay's creates and appends.
    pub(super) fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        if self.config().retention_s > 0 {
            if let Ok(age) = HeaderValue::from_str(&self.config().retention_s.to_string()) {
                h.insert(sessiond_streams::protocol::RETENTION_MAX_AGE, age);
            }
        }
        h
    }

    /// Forgets that `name` exists (it was deleted).
    pub fn forget(&self, name: &str) {
        self.known.forget(name);
    }
}

/// A relay lease holder's name: the process id (for an operator reading the lease key) and
/// random bits (unique across hosts and restarts).
fn holder_name() -> String {
    let mut bytes = [0u8; 8];
    super::secrets::getrandom_fill(&mut bytes);
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{random}", std::process::id())
}

/// One queued event: where in the outbox, whose, where it goes, and its copies.
struct Queued {
    key: String,
    queue: String,
    position: Option<u64>,
    user_id: Option<String>,
    /// The user's stream, if any.
    destination: Option<String>,
    /// [`Envelope::order`].
    order: (i64, u64),
    copies: Copies,
}

/// An outbox entry decoded: `None` when it is not an envelope of an event object.
fn decode(data: &[u8]) -> Option<(Envelope<Fields<'_>>, Copies)> {
    let envelope: Envelope<Fields<'_>> = serde_json::from_slice(data).ok()?;
    let copies = Copies::of(&envelope.event, !envelope.routed);
    Some((envelope, copies))
}

/// What a pass relays of the batch it read: the events in delivery order, and the outbox keys
/// it removes afterwards (theirs and those of undecodable entries, which are dropped).
struct InOrder {
    queued: Vec<Queued>,
    keys: Vec<String>,
}

/// `batch` decoded, each queue's events in queue order as the outbox returns them (what makes
/// delivery idempotent, see `delivery.rs`), the queues interleaved by event order
/// ([`Envelope::order`]: engines with several queues, one per shard, return them shard by
/// shard).
///
/// Only up to a horizon: when the read cut a queue short ([`OutboxItem::more_in_queue`]), its
/// unread events may come before other queues' later events, so events ordered after the
/// latest one read from a cut queue wait for the next pass (they stay queued). A cut queue is
/// bounded by the latest of its events read, not its last one (they differ when nodes' clocks
/// disagree): so the cut queue with the smallest bound is delivered whole, and every pass
/// makes progress.
fn in_delivery_order(batch: Vec<OutboxItem>, user_stream: impl Fn(&str) -> String) -> InOrder {
    let mut queues: BTreeMap<String, VecDeque<Queued>> = BTreeMap::new();
    let mut keys = Vec::with_capacity(batch.len());
    let mut horizon: Option<(i64, u64)> = None;
    for item in batch {
        let queue = queues.entry(item.queue.clone()).or_default();
        match decode(&item.data) {
            Some((envelope, copies)) => {
                queue.push_back(Queued {
                    destination: envelope.destination_named_by(&user_stream),
                    order: (copies.at, envelope.ord),
                    user_id: envelope.user_id,
                    key: item.key,
                    queue: item.queue,
                    position: item.position,
                    copies,
                });
            }
            None => {
                tracing::error!(key = %item.key, "dropping an undecodable security event");
                keys.push(item.key);
            }
        }
        if item.more_in_queue {
            // The latest event read of a cut queue (of those that decoded).
            let latest = queue.iter().map(|q| q.order).max().unwrap_or((i64::MIN, 0));
            horizon = Some(horizon.map_or(latest, |h| h.min(latest)));
        }
    }
    // Each queue's events up to the first one past the horizon (queue order is kept).
    if let Some(h) = horizon {
        for queue in queues.values_mut() {
            if let Some(past) = queue.iter().position(|q| q.order > h) {
                queue.truncate(past);
            }
        }
    }
    let mut queued = Vec::new();
    loop {
        let next = queues
            .values_mut()
            .filter(|q| !q.is_empty())
            .min_by_key(|q| q.front().map(|q| q.order));
        match next.and_then(VecDeque::pop_front) {
            Some(q) => {
                keys.push(q.key.clone());
                queued.push(q);
            }
            None => return InOrder { queued, keys },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_sessions::security::user_stream;

    fn item(queue: &str, at: i64, ord: u64, more_in_queue: bool) -> OutboxItem {
        let envelope = serde_json::json!({
            "stream": null, "user_id": "u", "ord": ord,
            "event": {"id": format!("{queue}{at}"), "type": "t", "at": at},
        });
        OutboxItem {
            key: format!("{queue}-{at}"),
            data: serde_json::to_vec(&envelope).expect("json"),
            queue: queue.into(),
            position: Some(u64::try_from(at).expect("positive")),
            more_in_queue,
        }
    }

    fn keys(order: &InOrder) -> Vec<&str> {
        order.queued.iter().map(|q| q.key.as_str()).collect()
    }

    /// Two events of one millisecond in different queues (an eviction, then the create that
    /// needed the room) keep the order they were made in, whatever the queues' names.
    #[test]
    fn events_of_one_millisecond_keep_the_order_they_were_made_in() {
        let evicted = item("z", 7, 100, false);
        let created = OutboxItem {
            key: "a-created".into(),
            ..item("a", 7, 101, false)
        };
        let order = in_delivery_order(vec![created, evicted], user_stream);
        assert_eq!(keys(&order), ["z-7", "a-created"]);
        assert_eq!(order.keys, ["z-7", "a-created"]);
    }

    /// A cut queue whose events are out of time order (nodes' clocks disagree) is still
    /// delivered whole when it bounds the horizon: a pass always makes progress.
    #[test]
    fn a_cut_queue_out_of_time_order_still_makes_progress() {
        let batch = vec![item("a", 30, 1, false), item("a", 20, 2, true)];
        let order = in_delivery_order(batch, |u| format!("users/{u}"));
        assert_eq!(keys(&order), ["a-30", "a-20"]);
    }

    /// Events after the last one read from a cut queue wait for the next pass (that queue's
    /// unread events may come before them); the rest go in order, and an undecodable entry
    /// is removed.
    #[test]
    fn a_cut_queue_holds_back_later_events_of_other_queues() {
        let broken = OutboxItem {
            key: "broken".into(),
            data: b"not json".to_vec(),
            ..item("c", 1, 1, false)
        };
        let batch = vec![
            item("a", 10, 1, false),
            item("a", 20, 2, true),
            item("b", 5, 3, false),
            item("b", 15, 4, false),
            item("b", 25, 5, false),
            broken,
        ];
        let order = in_delivery_order(batch, user_stream);
        assert_eq!(keys(&order), ["b-5", "a-10", "b-15", "a-20"]);
        let mut removed = order.keys.clone();
        removed.sort();
        assert_eq!(removed, ["a-10", "a-20", "b-15", "b-5", "broken"]);
    }
}
