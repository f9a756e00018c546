//! The reserved subscription APIs (PROTOCOL.md §6–7) under `/v1/stream/__ds/…`.
//!
//! A subscription is a durable set of cursors over streams (chosen by a glob `pattern` and/or
//! explicit paths) that wakes a worker when any of them has data past its cursor: by a signed
//! webhook POST, or by a wake event appended to a `wake_stream` that workers consume and then
//! `claim`. Every wake carries a `generation` and a `wake_id`; callbacks, acks and releases
//! must present both plus the wake's bearer token, so a slow or restarted worker can never
//! move a cursor on behalf of a wake it no longer owns (409 `FENCED`).
//!
//! Why it is built this way:
//! - **State lives in the object runtime** (persistent kind [`KIND`] over `ObjectStore`): one
//!   JSON record per subscription, changed only under its object lock and written through on
//!   every change, so generation, lease and retry schedule survive restarts without any new
//!   engine code. Each link (cursor) is its own object ([`links`]), so following one more
//!   stream writes one small object, not the whole record. The webhook signing key is
//!   persisted the same way ([`signing`]).
//! - **Appends are observed at the store** ([`observe`]), after the engine acknowledged them,
//!   and handled by one background task: the append path only does a non-blocking send on a
//!   bounded queue, and only while a subscription exists; when the queue is full the task
//!   rescans instead ([`Subscriptions::resync`]).
//! - **Every per-request cost is capped** ([`SubscriptionsConfig`]): pattern and path depth (matching is
//!   linear, [`glob`]), links per subscription, streams per wake, webhook answer size and
//!   time.
//! - **Network I/O never runs under a lock**: a wake is recorded first, then delivered by a
//!   spawned task that re-checks the generation before applying the receiver's answer.
//! - **Timers are alarms of the object runtime**: lease expiry and webhook retry times are
//!   stored in the record and mirrored into one persisted alarm per subscription (armed before
//!   the record is written), which only says "look again at this subscription"; the alarm
//!   scheduler claims each due alarm on one node, so a dead node's leases and retries are
//!   taken over by another.
//! - **Several nodes on one shared engine** (`EngineAdmin::exclusive` false): every operation
//!   re-reads the record (and the links it needs), and writes the record with a
//!   compare-and-set (`ObjectStore::swap_object` through [`ObjectGuard::persist_checked`]);
//!   a write that lost a race with another node runs the operation again on fresh state
//!   (`Subscriptions::retrying`). Issuing a wake is one such write (generation + 1), so each
//!   wake is issued, and therefore delivered, by exactly one node, and a callback, ack, claim
//!   or release is fenced by the record on whatever node serves it. Each node observes only
//!   the appends it made; it finds their subscriptions in its own [`index`], which it
//!   rebuilds from the records whenever the shared index version (an object every index
//!   change rewrites) moved, checked after the appends were acknowledged, so a subscription
//!   created through any node before an append returned is matched by that append. That
//!   check is an engine read; one read covers every change acknowledged before it started,
//!   so the task makes at most one per `index_check_ms` and the appends observed meanwhile
//!   wait for it (on a busy stream a read per append was half of the append's round trips).
//!
//! Module map: [`model`] (record and wire shapes), [`glob`], [`index`] (path → subscriptions),
//! [`observe`] (the store wrapper), [`signing`] (Ed25519 key, JWKS), [`wake`] (issuing, acking, leases, backoff), [`delivery`] (webhook POST, wake
//! stream), [`control`] and [`worker`] (HTTP handlers), [`routes`], [`error`].

pub mod control;
pub mod delivery;
pub mod error;
pub mod glob;
pub mod index;
pub mod links;
pub mod model;
pub mod observe;
pub mod routes;
pub mod signing;
pub mod wake;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sessiond_http::webhook::WebhookPolicy;
use sessiond_runtime::{AlarmError, AlarmHandler, Alarms, ObjectGuard, ObjectKind, RuntimeError};
use sessiond_store::ObjectStore;
use tokio::sync::mpsc;

pub use model::Subscription;
pub use observe::{observer, Change, Observer};
pub use signing::WebhookSigner;

use crate::config::SubscriptionsConfig;
use crate::service::Streams;

/// Object kind of subscription records.
pub const KIND: &str = "ds_subscription";
/// Object kind (and only key) of the shared index version.
const INDEX_KIND: &str = "ds_subscription_index";
const INDEX_KEY: &str = "version";
/// Name of the one alarm per subscription.
const ALARM: &str = "due";
/// Lost compare-and-set races in a row before an operation gives up (503).
const MAX_RACES: u32 = 16;
/// Observed changes taken per wake-up of the task (more join them while it waits for the
/// next index-version check, `SubscriptionsConfig::index_check_ms`).
const BATCH: usize = 256;

/// A locked subscription.
pub type SubGuard = ObjectGuard<Subscription>;

/// The subscription service (cheap to clone).
#[derive(Clone)]
pub struct Subscriptions {
    inner: Arc<Inner>,
}

struct Inner {
    streams: Streams,
    objects: ObjectKind<Subscription>,
    /// Where links are kept ([`links`]).
    store: Arc<dyn ObjectStore>,
    config: SubscriptionsConfig,
    index: index::Index,
    signer: WebhookSigner,
    http: sessiond_http::webhook::Client,
    /// Where webhooks may go (`streams.allow_insecure_webhooks`, `webhook_allowed_networks`).
    webhooks: WebhookPolicy,
    observer: Observer,
    /// Timers (see the module docs).
    alarms: Alarms,
    /// Other processes write the same engine.
    shared: bool,
    /// The shared index version the index was last built from (`None`: not built yet).
    index_version: tokio::sync::Mutex<Option<Option<Vec<u8>>>>,
}

/// The handler of subscription alarms: registered with the runtime before it starts (kind
/// [`KIND`]), bound to the service once it is open ([`AlarmTarget::bind`]).
#[derive(Clone, Default)]
pub struct AlarmTarget(Arc<std::sync::OnceLock<Subscriptions>>);

impl AlarmTarget {
    /// Routes alarms to `subs` from now on.
    pub fn bind(&self, subs: &Subscriptions) {
        let _ = self.0.set(subs.clone());
    }
}

#[async_trait::async_trait]
impl AlarmHandler for AlarmTarget {
    async fn fire(&self, key: &str, _name: &str, _payload: &str) -> Result<(), AlarmError> {
        let subs = self
            .0
            .get()
            .ok_or_else(|| AlarmError::other("subscriptions are not open yet"))?;
        subs.on_timer(key).await.map_err(AlarmError::other)
    }
}

impl Subscriptions {
    /// Opens the service: loads (or creates) the signing key, rebuilds the index from the
    /// persisted subscriptions and arms their timers. `objects` must be a persistent kind
    /// named [`KIND`] over `store`; `streams` must write through `observer.wrap(…)`; `alarms`
    /// must be a runtime's whose alarms of kind [`KIND`] reach an [`AlarmTarget`] bound to
    /// the result. Limits and `allow_insecure_webhooks` come from the streams configuration.
    pub async fn open(
        streams: Streams,
        objects: ObjectKind<Subscription>,
        store: Arc<dyn ObjectStore>,
        observer: Observer,
        alarms: Alarms,
    ) -> Result<Subscriptions, RuntimeError> {
        let signer = WebhookSigner::load_or_create(store.as_ref()).await?;
        let config = streams.config().subscriptions.clone();
        let webhooks = streams.config().webhook_policy().map_err(|e| {
            RuntimeError::Store(sessiond_store::StoreError::Unavailable(format!(
                "streams.webhook_allowed_networks: {e}"
            )))
        })?;
        let shared = !streams.exclusive;
        let http = webhooks
            .client(Duration::from_millis(config.webhook_timeout_ms))
            .map_err(|e| {
                RuntimeError::Store(sessiond_store::StoreError::Unavailable(format!(
                    "webhook HTTP client: {e}"
                )))
            })?;
        let subs = Subscriptions {
            inner: Arc::new(Inner {
                index: index::Index::new(config.max_path_segments),
                shared,
                alarms,
                index_version: tokio::sync::Mutex::new(None),
                streams,
                objects,
                store,
                config,
                signer,
                http,
                webhooks,
                observer,
            }),
        };
        let unavailable = |id: &str, e: error::SubError| {
            RuntimeError::Store(sessiond_store::StoreError::Unavailable(format!(
                "subscription {id}: {e:?}"
            )))
        };
        // Read before the records (see `refresh_index`).
        let version = subs.inner.store.load_object(INDEX_KIND, INDEX_KEY).await?;
        let mut after: Option<String> = None;
        loop {
            let ids = subs.inner.objects.list("", after.as_deref(), 500).await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in ids {
                let mut g = subs.inner.objects.lock(&id).await;
                let loaded = subs.load(&mut g).await.map_err(|e| unavailable(&id, e))?;
                if let Some(sub) = loaded {
                    subs.index_record(sub);
                    // Timers of records written before they were alarms.
                    if let Some(at) = sub.next_due() {
                        subs.arm(&id, at).await.map_err(|e| unavailable(&id, e))?;
                    }
                }
            }
            after = Some(last);
        }
        *subs.inner.index_version.lock().await = Some(version);
        subs.refresh_active();
        Ok(subs)
    }

    /// The streams service.
    pub fn streams(&self) -> &Streams {
        &self.inner.streams
    }

    /// The webhook signer (its JWKS is public).
    pub fn signer(&self) -> &WebhookSigner {
        &self.inner.signer
    }

    /// Handles observed changes until `stop` resolves.
    pub async fn run(
        self,
        mut changes: mpsc::Receiver<Change>,
        stop: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(stop);
        let mut batch = Vec::with_capacity(BATCH);
        let interval = Duration::from_millis(self.inner.config.index_check_ms);
        let mut last_check: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                n = changes.recv_many(&mut batch, BATCH) => if n == 0 { break },
            }
            if self.inner.shared {
                // One version read covers every change acknowledged before it starts: wait
                // out the interval, then take along all that arrived meanwhile.
                if let Some(next) = last_check.map(|t| t + interval) {
                    if next > tokio::time::Instant::now() {
                        tokio::select! {
                            _ = &mut stop => break,
                            _ = tokio::time::sleep_until(next) => {}
                        }
                        while batch.len() < self.inner.config.observer_queue {
                            let Ok(change) = changes.try_recv() else {
                                break;
                            };
                            batch.push(change);
                        }
                    }
                }
                last_check = Some(tokio::time::Instant::now());
            }
            // After the appends were acknowledged: sees every subscription created before.
            if let Err(e) = self.refresh_index().await {
                tracing::warn!(error = ?e, "cannot refresh the subscription index");
            }
            for change in batch.drain(..) {
                self.on_change(change).await;
            }
            if self.inner.observer.take_overflow() {
                self.resync().await;
            }
        }
    }

    /// Runs `op` again while it loses compare-and-set races with other nodes (each attempt
    /// must lock and reload), at most [`MAX_RACES`] times.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut op: F) -> error::SubResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = error::SubResult<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_raced() && attempt < MAX_RACES => {
                    ::metrics::counter!("sessiond_streams_subscription_races_total").increment(1);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Records that the index changed (shared engines: other nodes rebuild theirs).
    pub(crate) async fn index_changed(&self) -> error::SubResult<()> {
        if self.inner.shared {
            let version = sessiond_http::ids::random_id();
            self.inner
                .store
                .save_object(
                    INDEX_KIND,
                    INDEX_KEY,
                    version.as_bytes(),
                    sessiond_store::Durability::Confirmed,
                )
                .await?;
        }
        Ok(())
    }

    /// Rebuilds the index from the records if the shared index version moved (shared
    /// engines). The version is read before the records and written after them by every
    /// change, so a rebuild never settles on a version newer than what it read.
    async fn refresh_index(&self) -> error::SubResult<()> {
        if !self.inner.shared {
            return Ok(());
        }
        let mut seen = self.inner.index_version.lock().await;
        let version = self.inner.store.load_object(INDEX_KIND, INDEX_KEY).await?;
        if seen.as_ref() == Some(&version) {
            return Ok(());
        }
        let mut entries = std::collections::BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let ids = self.inner.objects.list("", after.as_deref(), 500).await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in ids {
                let Some(bytes) = self.inner.store.load_object(KIND, &id).await? else {
                    continue;
                };
                match serde_json::from_slice::<Subscription>(&bytes) {
                    Ok(sub) => {
                        let explicit = sub
                            .explicit
                            .unwrap_or_else(|| sub.config.streams.iter().cloned().collect());
                        entries.insert(id, (sub.config.pattern, explicit));
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %id, error = %e, "unreadable subscription")
                    }
                }
            }
            after = Some(last);
        }
        self.inner.index.replace_all(entries);
        *seen = Some(version);
        Ok(())
    }

    /// Arms the subscription's alarm at `at` (replacing an earlier one).
    pub(crate) async fn arm(&self, id: &str, at: sessiond_store::Millis) -> error::SubResult<()> {
        self.inner.alarms.set(KIND, id, ALARM, at, "").await?;
        Ok(())
    }

    fn index_record(&self, sub: &Subscription) {
        let explicit = sub.explicit.clone().unwrap_or_default();
        self.inner
            .index
            .set(&sub.id, sub.config.pattern.clone(), explicit);
    }

    /// Observing costs nothing while no subscription exists; on a shared engine one may be
    /// created through another node at any time, so appends are always observed there.
    fn refresh_active(&self) {
        let active = self.inner.shared || !self.inner.index.is_empty();
        self.inner.observer.set_active(active);
    }
}
