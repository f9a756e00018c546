//! The user's copy of an event written in the change's own transaction, on engines that
//! route events (`sessiond_store::Outbox::outbox_route`: SQLite).
//!
//! Why: through the relay, a user's copy cost an outbox row, a read, an append request per
//! user stream and pass through the streams capability (headers, the values parsed again, the
//! producer check), a producer row and a second commit: together about as much as the change
//! it records. Written by the change's own engine step it costs a chunk row and a tail update,
//! is in the user's stream exactly once with the change (kill -9 cannot separate them) and in
//! the order the changes were applied. The entry queued for the relay is then marked
//! `routed` and only feeds the global stream, whose copy needs the user's `user_ref` (a
//! secret read or write: not for the engine's writer) and is one request per pass anyway.
//!
//! The engine appends at the user stream's stored tail and creates the stream, when it has
//! none, as the relay's first request would have (JSON, `security.retention_s`); the streams
//! capability reloads these streams rather than trusting its cache
//! (`Streams::written_outside`), and wakes their readers on the engine's notifications.

use std::sync::{Arc, Mutex, PoisonError};

use sessiond_sessions::security::{user_stream, Envelope, SecurityConfig};
use sessiond_store::{OutboxRoute, Routed, RoutedAppend, StoreError, StreamMeta};

use super::recent::Recent;
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
        let mut names = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        names.entry(user, || user_stream(user)).clone()
    }
}

/// The route (see the module docs).
pub(super) struct UserCopies {
    names: StreamNames,
    retention: sessiond_streams::state::Retention,
}

impl UserCopies {
    pub(super) fn new(config: &SecurityConfig, names: StreamNames) -> Self {
        UserCopies {
            names,
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
    fn split(&self, event: &[u8]) -> Routed {
        let whole = || Routed {
            appends: Vec::new(),
            queue: Some(event.to_vec()),
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
        let Some(path) = envelope.destination_named_by(|user| self.names.of(user)) else {
            return whole();
        };
        let mut queued = Vec::with_capacity(ROUTED.len() + rest.len());
        queued.extend_from_slice(ROUTED);
        queued.extend_from_slice(rest);
        Routed {
            appends: vec![RoutedAppend {
                path,
                data: envelope.event.get().as_bytes().to_vec(),
            }],
            queue: Some(queued),
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

    /// A keyed session's event: its user's copy goes to the user's stream as the relay wrote
    /// it, and the queued rest is the same entry marked routed (global copy only); an entry
    /// without a user stream is queued whole.
    #[test]
    fn a_user_copy_is_appended_and_the_rest_queued_marked() {
        let route = UserCopies::new(&SecurityConfig::default(), StreamNames::default());
        let entry = json!({"stream": null, "user_id": "ada", "origin": "service", "ord": 3,
            "event": {"id": "e", "type": "session.created", "at": 5, "user_id": "ada"}});
        let bytes = serde_json::to_vec(&entry).expect("json");
        let routed = route.split(&bytes);
        assert_eq!(routed.appends.len(), 1);
        assert_eq!(routed.appends[0].path, user_stream("ada"));
        let copy: Value = serde_json::from_slice(&routed.appends[0].data).expect("copy");
        assert_eq!(copy, entry["event"]);
        let queued: Envelope = serde_json::from_slice(&routed.queue.expect("rest")).expect("rest");
        assert!(queued.routed && queued.destination().is_none());
        assert_eq!(queued.user_id.as_deref(), Some("ada"));

        let global_only = json!({"stream": null, "user_id": null, "ord": 1, "event": {"id": "x"}});
        let bytes = serde_json::to_vec(&global_only).expect("json");
        let routed = route.split(&bytes);
        assert!(routed.appends.is_empty());
        assert_eq!(routed.queue, Some(bytes));
    }
}
