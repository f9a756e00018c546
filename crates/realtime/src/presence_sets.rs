//! The names of the engine's presence sets (see `presence.rs` for what each holds).
//!
//! Shared by cluster presence, which joins and reads the sets, and the user events, which
//! settle a user's transition on the user's set; kept below both (and below the hub that runs
//! them), so the events need not import presence for a name.

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
