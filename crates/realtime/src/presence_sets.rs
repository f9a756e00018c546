//! The names of the engine's presence sets (see `presence.rs` for what each holds), and the
//! hub's handle on them.
//!
//! Shared by cluster presence, which joins and reads the sets, and the user events, which
//! settle a user's transition on the user's set; kept below both (and below the hub that runs
//! them, whose state holds the [`ClusterPresence`]), so neither the events nor the hub need
//! import presence for a name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sessiond_store::{Millis, PresenceStore};

/// Set of every socket (info = its user).
pub(crate) const ALL: &str = "*";

/// The presence set of `user`'s sockets.
pub(crate) fn user_set(user: &str) -> String {
    format!("u:{user}")
}

/// The presence set of `channel`'s subscribers.
pub(crate) fn channel_set(channel: &str) -> String {
    format!("c:{channel}")
}

/// The hub's side of the presence store.
pub(crate) struct ClusterPresence {
    pub(crate) store: Arc<dyn PresenceStore>,
    pub(crate) ttl_ms: Millis,
    /// Remote channel changes that arrived while the channel was loading.
    pub(crate) pending: Mutex<HashMap<String, Vec<RemoteChange>>>,
    /// Local channel changes written and signalled so far.
    pub(crate) done: tokio::sync::watch::Sender<u64>,
}

/// Another node's change to a channel's presence.
pub(crate) type RemoteChange = (String, Option<(String, Value)>);
