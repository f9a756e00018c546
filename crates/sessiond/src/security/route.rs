//! The user's copy of an event written in the change's own transaction, on engines that route
//! events (`sessiond_store::Outbox::outbox_route`: SQLite).
//!
//! Why: through the relay, a user's copy cost an outbox row, a read, an append request per
//! user stream and pass through the streams capability (headers, the values parsed again, the
//! producer check), a producer row and a second commit: together about as much as the change
//! it records. Written by the change's own engine step it costs a chunk row (and a read of the
//! stream's row when the writer does not remember it), is in the user's stream exactly once
//! with the change (kill -9 cannot separate them) and in the order the changes were applied.
//! The entry queued for the relay is then marked `routed` and only feeds the global stream,
//! whose copy the relay writes: one request per pass for all the pass's events, which per
//! event is cheaper than a chunk row and a tail update in each change's transaction
//! (measured: docs/benchmarks.md, session 12).
//!
//! The global copy needs the user's `user_ref`: the user's secret is read, or created, here in
//! the change's transaction (`RouteObjects`) when its ref is not in memory, and the ref is
//! remembered once the transaction committed (`Secrets::remember_in`), so the relay finds it
//! in memory. Why: for a new user the relay's secret lookup was a read and a write command of
//! its own; in the change's transaction it is one row.
//!
//! The engine appends at the user stream's stored tail and creates the stream, when it has
//! none, as the relay's first request would have (JSON, `security.retention_s`); the streams
//! capability reloads these streams rather than trusting its cache
//! (`Streams::written_outside`), and wakes their readers on the engine's notifications.

use std::sync::{Arc, Mutex, PoisonError};

use sessiond_sessions::security::{user_stream, Envelope, SecurityConfig, USER_STREAMS};
use sessiond_store::{OutboxRoute, RouteObjects, Routed, RoutedAppend, StoreError, StreamMeta};

use super::recent::Recent;
use super::Secrets;
use serde_json::value::RawValue;

/// Users whose stream names are remembered: between this many and twice as many.
const NAMES_KEPT: usize = 16_384;

/// user id → the user's stream name (a hash per event otherwise), shared by the route and the
/// relay.
#[derive(Clone)]
pub(super) struct StreamNames(Arc<Mutex<Recent<String, String>>>);

impl Default for StreamNames {
    fn default() -> Self {
        StreamNames(Arc::new(Mutex::new(Recent::new(NAMES_KEPT))))
    }
}

impl StreamNames {
    /// The name of `user`'s stream.
    pub(super) fn of(&self, user: &str) -> String {
        self.made(user).0
    }

    /// The name of `user`'s stream, and whether it was made now (not remembered).
    fn made(&self, user: &str) -> (String, bool) {
        let mut names = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut made = false;
        let name = names
            .entry(user, || {
                made = true;
                user_stream(user)
            })
            .clone();
        (name, made)
    }
}

/// The route (see the module docs).
pub(super) struct UserCopies {
    names: StreamNames,
    secrets: Secrets,
    retention: sessiond_streams::state::Retention,
}

impl UserCopies {
    pub(super) fn new(config: &SecurityConfig, names: StreamNames, secrets: Secrets) -> Self {
        UserCopies {
            names,
            secrets,
            retention: sessiond_streams::state::Retention {
                max_age_s: (config.retention_s > 0).then_some(config.retention_s),
                max_bytes: None,
            },
        }
    }
}

/// The prefix that marks an entry as routed (`Envelope::routed`): it replaces the entry's
/// opening brace.
const ROUTED: &[u8] = br#"{"routed":true,"#;

impl OutboxRoute for UserCopies {
    fn split(&self, event: &[u8], objects: &mut dyn RouteObjects) -> Routed {
        let whole = || Routed {
            queue: Some(event.to_vec()),
            ..Routed::default()
        };
        // An entry as the session service writes it: an object with at least one field.
        let Some(rest) = event
            .strip_prefix(b"{")
            .filter(|r| r.first() == Some(&b'"'))
        else {
            return whole();
        };
        // The event as written (not re-encoded field by field, as the relay's copies are):
        // it decodes the same, and only the envelope's few fields are read.
        let Ok(envelope) = serde_json::from_slice::<Envelope<&RawValue>>(event) else {
            return whole();
        };
        if !envelope.event.get().starts_with('{') {
            return whole();
        }
        let mut named_now = false;
        let named = |user: &str| {
            let (name, made) = self.names.made(user);
            named_now = made;
            name
        };
        let Some(path) = envelope.destination_named_by(named) else {
            return whole();
        };
        // Only for a user not seen lately (a new one, most often): a remembered stream name
        // goes with a remembered ref (both caches keep the users of the latest events), and
        // the relay reads a secret itself when it must.
        let user = envelope.user_id.as_deref().filter(|_| named_now);
        let remember = user.and_then(|user| {
            let hash = path.strip_prefix(USER_STREAMS).unwrap_or(&path);
            // The relay reads the secret itself then.
            self.secrets
                .remember_in(user, hash, objects)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot read a user secret in the event's transaction; the relay will"))
                .ok()
                .flatten()
        });
        let mut queued = Vec::with_capacity(ROUTED.len() + rest.len());
        queued.extend_from_slice(ROUTED);
        queued.extend_from_slice(rest);
        Routed {
            appends: vec![RoutedAppend {
                path,
                data: envelope.event.get().as_bytes().to_vec(),
            }],
            queue: Some(queued),
            committed: remember.map(|r| Box::new(move || r.keep()) as Box<dyn FnOnce() + Send>),
        }
    }

    fn new_stream(&self, path: &str) -> Result<StreamMeta, StoreError> {
        let now = sessiond_store::now_ms();
        sessiond_streams::create::server_json_stream(path, self.retention.clone(), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use sessiond_store::ObjectStore;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// Objects in memory, as a transaction would show them.
    #[derive(Default)]
    struct Objects(HashMap<(String, String), Vec<u8>>);

    impl RouteObjects for Objects {
        fn load(&mut self, kind: &str, key: &str) -> sessiond_store::Result<Option<Vec<u8>>> {
            Ok(self.0.get(&(kind.into(), key.into())).cloned())
        }
        fn create(&mut self, kind: &str, key: &str, state: &[u8]) -> sessiond_store::Result<bool> {
            let key = (kind.to_owned(), key.to_owned());
            let absent = !self.0.contains_key(&key);
            self.0.entry(key).or_insert_with(|| state.to_vec());
            Ok(absent)
        }
    }

    fn route() -> (UserCopies, Secrets) {
        let objects = Arc::new(sessiond_store::memory::MemoryEngine::new());
        let secrets = Secrets::new(objects);
        let route = UserCopies::new(
            &SecurityConfig::default(),
            StreamNames::default(),
            secrets.clone(),
        );
        (route, secrets)
    }

    /// An event of a keyed session of user `ada`: the entry, and its bytes.
    fn ada_event(kind: &str) -> (Value, Vec<u8>) {
        let entry = json!({"stream": null, "user_id": "ada", "origin": "service", "ord": 3,
            "event": {"id": "e", "type": kind, "at": 5, "user_id": "ada"}});
        let bytes = serde_json::to_vec(&entry).expect("json");
        (entry, bytes)
    }

    /// A keyed session's event: its user's copy goes to the user's stream as written and the
    /// rest is queued marked routed (global copy only); the user's secret is created in the
    /// transaction and its ref remembered only once `committed` ran, the ref the relay computes
    /// from that secret; the next event finds it in memory. An entry without a user stream is
    /// queued whole.
    #[tokio::test]
    async fn a_user_copy_is_appended_the_rest_queued_and_the_secret_made() {
        let (route, secrets) = route();
        let mut objects = Objects::default();
        let (entry, bytes) = ada_event("session.created");
        let routed = route.split(&bytes, &mut objects);
        assert_eq!(routed.appends.len(), 1);
        assert_eq!(routed.appends[0].path, user_stream("ada"));
        let copy: Value = serde_json::from_slice(&routed.appends[0].data).expect("copy");
        assert_eq!(copy, entry["event"]);
        let queued: Envelope = serde_json::from_slice(&routed.queue.expect("rest")).expect("rest");
        assert!(queued.routed && queued.destination().is_none());
        assert_eq!(queued.user_id.as_deref(), Some("ada"));
        let secret = objects
            .0
            .values()
            .next()
            .expect("the secret, made in the transaction");
        assert!(
            secrets.cached_user_ref("ada").is_none(),
            "not before the commit"
        );
        (routed.committed.expect("remembers the ref"))();
        let remembered = secrets.cached_user_ref("ada").expect("remembered");
        let stored = Arc::new(sessiond_store::memory::MemoryEngine::new());
        let key = sessiond_sessions::security::user_hash("ada");
        stored
            .save_object(
                "security-secret",
                &key,
                secret,
                sessiond_store::Durability::Confirmed,
            )
            .await
            .expect("store");
        let fresh = Secrets::new(stored);
        assert_eq!(fresh.user_ref("ada").await.expect("ref"), remembered);
        let again = route.split(&bytes, &mut objects);
        assert!(again.committed.is_none(), "in memory");
        assert_eq!(objects.0.len(), 1);

        let global_only = json!({"stream": null, "user_id": null, "ord": 1, "event": {"id": "x"}});
        let bytes = serde_json::to_vec(&global_only).expect("json");
        let routed = route.split(&bytes, &mut objects);
        assert!(routed.appends.is_empty());
        assert_eq!(routed.queue, Some(bytes));
    }

    /// A ref read before an erasure forgot the user is not remembered after it.
    #[tokio::test]
    async fn an_erasure_drops_a_ref_read_before_it() {
        let (route, secrets) = route();
        let routed = route.split(&ada_event("session.revoked").1, &mut Objects::default());
        secrets.forget("ada").await.expect("forget");
        (routed.committed.expect("remembers the ref"))();
        assert!(secrets.cached_user_ref("ada").is_none());
    }
}
