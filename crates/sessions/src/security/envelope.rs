//! The outbox entry of an event and the names of the streams it goes to.
//!
//! Why its own module: the entry is the contract between the session service that queues it
//! and the relay that delivers it (in the server crate); both read it through these types.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sessiond_store::SessionOrigin;
use sha2::{Digest, Sha256};

use super::USER_STREAMS;

/// The outbox entry of one event: where it goes and what it says. `E` is how the event is
/// held: a map where it is built, the JSON text as written where only some of its fields are
/// read (the relay, see its `copies.rs`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<E = Map<String, Value>> {
    /// The user's stream (`None`: the global stream only, e.g. for sessions created on an
    /// open route, which prove no identity).
    pub stream: Option<String>,
    /// The user the event is about (the relay turns it into `user_ref` for the global copy).
    pub user_id: Option<String>,
    /// The session's origin, when `stream` was left to the relay: the writer did not know the
    /// user (a data change the store applied itself, see [`SecurityEvents::data_changed`]),
    /// or left the name's hash to the relay ([`SecurityEvents::about`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<SessionOrigin>,
    /// Orders events of one `at` (see [`order_stamp`]); 0 in entries queued before it existed.
    #[serde(default)]
    pub ord: u64,
    /// True when the user's copy was written already, in the change's own transaction (an
    /// engine that routes events, `sessiond_store::Outbox::outbox_route`): the entry is
    /// queued for the global copy only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub routed: bool,
    /// The event as the user's stream shows it.
    pub event: E,
}

impl Envelope {
    /// The order the relay delivers a user's events in: by `at`, then by [`order_stamp`].
    pub fn order(&self) -> (i64, u64) {
        let at = self.event.get("at").and_then(Value::as_i64).unwrap_or(0);
        (at, self.ord)
    }
}

impl<E> Envelope<E> {
    /// The user's stream the event goes to, if any (every event also goes to the global one).
    pub fn destination(&self) -> Option<String> {
        self.destination_named_by(user_stream)
    }

    /// [`destination`](Self::destination), with `name` giving a user's stream name when the
    /// entry left it to the relay (which remembers names rather than hashing per event). A
    /// user's stream gets the events of keyed sessions only: an open-route session proves no
    /// identity, so its events go to the global stream only.
    pub fn destination_named_by(&self, name: impl FnOnce(&str) -> String) -> Option<String> {
        if self.routed {
            return None;
        }
        match (&self.stream, &self.user_id, self.origin) {
            (Some(stream), _, _) => Some(stream.clone()),
            (None, Some(user), Some(SessionOrigin::Service)) => Some(name(user)),
            _ => None,
        }
    }
}

/// A stamp for the next event this process builds: microseconds since the epoch, strictly
/// above the last stamp handed out. Why: two changes one request makes one after the other
/// (an eviction, then the create that needed the room) are often stamped with the same `at`
/// millisecond and queued in different outbox queues; the stamp keeps them in the order they
/// were made when the relay merges the queues. (Events of different nodes within one
/// millisecond are concurrent; their order by stamp is as good as any.)
pub fn order_stamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let next = |last: u64| now.max(last.saturating_add(1));
    match LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        Some(next(last))
    }) {
        Ok(last) | Err(last) => next(last),
    }
}

/// The name of `user_id`'s security stream.
pub fn user_stream(user_id: &str) -> String {
    format!("{USER_STREAMS}{}", user_hash(user_id))
}

/// base64url(sha256(user_id)), no padding: the user's key in names (not a secret).
pub fn user_hash(user_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(user_id.as_bytes()))
}
