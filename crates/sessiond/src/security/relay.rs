//! Moves queued security events from the engine's outbox into the security streams.
//!
//! One pass: read a batch, append each event to its user's stream (when it has one) and a
//! derived copy to the global stream, then remove the batch from the outbox. The relay wakes
//! when the session service queued something (`SecurityEvents::queued`) and every second
//! anyway (events queued by another node, or left by a crash).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use sessiond_sessions::security::{Envelope, SecurityConfig, SecurityEvents, GLOBAL_STREAM};
use sessiond_store::Outbox;
use sessiond_streams::Streams;

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
    /// A task of the pass panicked or was cancelled.
    #[error("a relay task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
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
/// Stream names remembered as created before the memory starts over.
const REMEMBERED: usize = 100_000;

/// The relay. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    outbox: Arc<dyn Outbox>,
    streams: Streams,
    secrets: Secrets,
    events: SecurityEvents,
    /// Streams known to exist (created by this process).
    created: Arc<Mutex<HashSet<String>>>,
    /// One pass at a time (the background loop and an erasure's flush).
    pass: Arc<tokio::sync::Mutex<()>>,
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
            created: Arc::default(),
            pass: Arc::default(),
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
        loop {
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "cannot relay security events; will retry");
            }
            tokio::select! {
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
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "cannot relay security events at shutdown; they stay queued");
        }
    }

    /// Relays everything queued now.
    pub async fn flush(&self) -> Result<(), RelayError> {
        let _pass = self.pass.lock().await;
        loop {
            let batch = self
                .outbox
                .outbox_read(self.config().relay_batch.max(1))
                .await?;
            if batch.is_empty() {
                return Ok(());
            }
            let mut per_stream: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
            let mut keys = Vec::with_capacity(batch.len());
            let mut envelopes = Vec::with_capacity(batch.len());
            for item in batch {
                keys.push(item.key);
                match serde_json::from_slice::<Envelope>(&item.data) {
                    Ok(e) => envelopes.push(e),
                    Err(e) => tracing::error!(error = %e, "dropping an undecodable security event"),
                }
            }
            // Engines with several queues (one per shard) return them shard by shard: a
            // batch goes out in time order.
            envelopes.sort_by_key(|e| e.event.get("at").and_then(serde_json::Value::as_i64));
            let refs = self.user_refs(&envelopes).await?;
            for envelope in envelopes {
                let user_ref = match &envelope.user_id {
                    Some(user) => refs.get(user).cloned().map_or(Value::Null, Value::from),
                    None => Value::Null,
                };
                let global = global_copy(&envelope, user_ref);
                if let Some(stream) = envelope.destination() {
                    per_stream
                        .entry(stream)
                        .or_default()
                        .push(encode(&envelope.event));
                }
                per_stream
                    .entry(GLOBAL_STREAM.to_string())
                    .or_default()
                    .push(encode(&global));
            }
            // Concurrently, so the engine commits them together (one SQLite transaction).
            let mut appends = tokio::task::JoinSet::new();
            for (stream, values) in per_stream {
                let relay = self.clone();
                appends.spawn(async move { relay.append(&stream, values).await });
            }
            while let Some(done) = appends.join_next().await {
                done??;
            }
            self.outbox.outbox_remove(&keys).await?;
            metrics::counter!("sessiond_security_events_relayed_total")
                .increment(keys.len() as u64);
        }
    }

    /// The `user_ref` of every user of `envelopes`, looked up concurrently (a new user's
    /// secret is a write: many of them share one engine commit).
    async fn user_refs(
        &self,
        envelopes: &[Envelope],
    ) -> Result<std::collections::HashMap<String, String>, RelayError> {
        let users: HashSet<&String> = envelopes
            .iter()
            .filter_map(|e| e.user_id.as_ref())
            .collect();
        let mut lookups = tokio::task::JoinSet::new();
        for user in users {
            let (secrets, user) = (self.secrets.clone(), user.clone());
            lookups.spawn(async move {
                let user_ref = secrets.user_ref(&user).await;
                (user, user_ref)
            });
        }
        let mut refs = std::collections::HashMap::new();
        while let Some(done) = lookups.join_next().await {
            let (user, user_ref) = done?;
            refs.insert(user, user_ref?);
        }
        Ok(refs)
    }

    /// Appends `values` to the JSON stream `name`, creating it first if needed.
    async fn append(&self, name: &str, values: Vec<Vec<u8>>) -> Result<(), RelayError> {
        let h = self.headers();
        let failed = |source| RelayError::Stream {
            stream: name.to_owned(),
            source,
        };
        let mut attempt = 0;
        loop {
            if !self.is_created(name) {
                sessiond_streams::create::create(&self.streams, name, &h, Bytes::new(), "/")
                    .await
                    .map_err(failed)?;
                self.remember(name);
            }
            match sessiond_streams::append::append_json_values(
                &self.streams,
                name,
                &h,
                values.clone(),
            )
            .await
            {
                Ok(_) => return Ok(()),
                // Deleted meanwhile (an erasure, a sweep): create it again once.
                Err(e) if e.api.status == StatusCode::NOT_FOUND && attempt == 0 => {
                    self.forget(name);
                    attempt += 1;
                }
                Err(e) => return Err(failed(e)),
            }
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        if self.config().retention_s > 0 {
            if let Ok(age) = HeaderValue::from_str(&self.config().retention_s.to_string()) {
                h.insert(sessiond_streams::protocol::RETENTION_MAX_AGE, age);
            }
        }
        h
    }

    fn is_created(&self, name: &str) -> bool {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    fn remember(&self, name: &str) {
        let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
        if created.len() >= REMEMBERED {
            created.clear();
        }
        created.insert(name.to_string());
    }

    /// Forgets that `name` exists (it was deleted).
    pub fn forget(&self, name: &str) {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

/// The event as the global stream shows it: `user_ref` instead of `user_id`, no address.
fn global_copy(envelope: &Envelope, user_ref: Value) -> Map<String, Value> {
    let mut global = Map::new();
    for (key, value) in &envelope.event {
        match key.as_str() {
            "user_id" => {
                global.insert("user_ref".into(), user_ref.clone());
            }
            "device" => {
                let mut device = value.clone();
                if let Some(fields) = device.as_object_mut() {
                    fields.remove("ip");
                }
                global.insert(key.clone(), device);
            }
            _ => {
                global.insert(key.clone(), value.clone());
            }
        }
    }
    global.entry("user_ref").or_insert(user_ref);
    global
}

fn encode(event: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_default()
}
