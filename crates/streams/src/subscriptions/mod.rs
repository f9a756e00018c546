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
//! - **Every per-request cost is capped** ([`config`]): pattern and path depth (matching is
//!   linear, [`glob`]), links per subscription, streams per wake, webhook answer size and
//!   time.
//! - **Network I/O never runs under a lock**: a wake is recorded first, then delivered by a
//!   spawned task that re-checks the generation before applying the receiver's answer.
//! - **Timers are re-derived from state**: lease expiry and webhook retry times are stored in
//!   the record; a timer task only says "look again at this subscription", and startup
//!   re-arms one per subscription with a wake or retry pending.
//!
//! Module map: [`model`] (record and wire shapes), [`glob`], [`index`] (path → subscriptions),
//! [`observe`] (the store wrapper), [`signing`] (Ed25519 key, JWKS), [`wake`] (issuing, acking, leases, backoff), [`delivery`] (webhook POST, wake
//! stream), [`control`] and [`worker`] (HTTP handlers), [`routes`], [`error`].

pub mod config;
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
use sessiond_runtime::{ObjectGuard, ObjectKind, RuntimeError};
use sessiond_store::ObjectStore;
use tokio::sync::mpsc;

pub use config::SubscriptionsConfig;
pub use model::Subscription;
pub use observe::{observer, Change, Observer};
pub use routes::{control_router, token_router};
pub use signing::WebhookSigner;

use crate::service::Streams;

/// Object kind of subscription records.
pub const KIND: &str = "ds_subscription";

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
}

impl Subscriptions {
    /// Opens the service: loads (or creates) the signing key, rebuilds the index from the
    /// persisted subscriptions and re-arms their timers. `objects` must be a persistent kind
    /// named [`KIND`] over `store`; `streams` must write through `observer.wrap(…)`. Limits
    /// and `allow_insecure_webhooks` come from the streams configuration.
    pub async fn open(
        streams: Streams,
        objects: ObjectKind<Subscription>,
        store: Arc<dyn ObjectStore>,
        observer: Observer,
    ) -> Result<Subscriptions, RuntimeError> {
        let signer = WebhookSigner::load_or_create(store.as_ref()).await?;
        let config = streams.config().subscriptions.clone();
        let webhooks = streams.config().webhook_policy().map_err(|e| {
            RuntimeError::Store(sessiond_store::StoreError::Unavailable(format!(
                "streams.webhook_allowed_networks: {e}"
            )))
        })?;
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
        let mut after: Option<String> = None;
        loop {
            let ids = subs.inner.objects.list("", after.as_deref(), 500).await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in ids {
                let mut g = subs.inner.objects.lock(&id).await;
                let loaded = subs.load(&mut g).await.map_err(|e| {
                    RuntimeError::Store(sessiond_store::StoreError::Unavailable(format!(
                        "subscription {id}: {e:?}"
                    )))
                })?;
                if let Some(sub) = loaded {
                    subs.index_record(sub);
                    let due = [
                        sub.wake.as_ref().map(|w| w.lease_until),
                        sub.retry.as_ref().map(|r| r.next_attempt_at),
                    ];
                    for at in due.into_iter().flatten() {
                        subs.schedule(&id, at);
                    }
                }
            }
            after = Some(last);
        }
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
        loop {
            tokio::select! {
                _ = &mut stop => break,
                change = changes.recv() => match change {
                    Some(change) => self.on_change(change).await,
                    None => break,
                },
            }
            if self.inner.observer.take_overflow() {
                self.resync().await;
            }
        }
    }

    fn index_record(&self, sub: &Subscription) {
        let explicit = sub
            .links
            .iter()
            .filter(|(_, l)| l.explicit)
            .map(|(p, _)| p.clone())
            .collect();
        self.inner
            .index
            .set(&sub.id, sub.config.pattern.clone(), explicit);
    }

    fn refresh_active(&self) {
        self.inner.observer.set_active(!self.inner.index.is_empty());
    }
}
