//! Security event streams: the relay from the engine's outbox to `__security/users/<hash>`
//! and `__security/all`, the per-user secrets behind the global stream's `user_ref`, and the
//! user-data source (export, erasure) of the events.
//!
//! Why a relay: the session service and the store write each event in the same atomic step
//! as the session change it records, into the engine's outbox (`sessiond_store::outbox`);
//! streams are another capability with its own locks, caches and readers, so the server moves
//! queued events into them here, through the streams capability like any other producer, and
//! removes them from the outbox only once appended. A crash in between shows them to the next
//! pass again, and relays on several nodes may read the same events concurrently (one node
//! holds the relay lease at a time, but a handover or a flush may overlap, see `relay.rs`): each
//! append is an idempotent producer request keyed by the events' places in the outbox and
//! conditioned on the producer's state the relay read (`delivery.rs`), so no copy is appended
//! twice and each event is in its streams exactly once. On SQLite, whose engine also stores the
//! streams, the user's copy is written in the change's own transaction instead (`route.rs`),
//! and the relay only writes the global copy.
//!
//! The global copy of an event carries no user id and no address: `user_ref` is
//! HMAC-SHA256(per-user secret, user_id), so references to one user can be correlated while
//! the secret exists and never after the user's erasure deletes it.

mod copies;
mod delivery;
mod recent;
mod refused;
mod relay;
mod route;
mod secrets;
mod user_data;

pub use refused::RefusedRequests;
pub use relay::Relay;
pub use secrets::Secrets;
pub use user_data::SecurityUserData;

/// The security events' parts, as the server wires them.
#[derive(Clone)]
pub struct Wired {
    /// The builder the session service records with.
    pub events: sessiond_sessions::security::SecurityEvents,
    /// The relay (run it in the background).
    pub relay: Relay,
    /// The export/erasure source.
    pub user_data: SecurityUserData,
}

/// Builds the security events' parts over `stores` and `streams`.
pub fn wire(
    config: &crate::config::Config,
    stores: &sessiond_store::Stores,
    streams: sessiond_streams::Streams,
) -> Wired {
    let events = sessiond_sessions::security::SecurityEvents::new(
        config.security.clone(),
        stores.objects.clone(),
    )
    .with_outbox(stores.outbox.clone());
    let secrets = Secrets::new(stores.objects.clone());
    let relay = Relay::new(
        stores.outbox.clone(),
        streams.clone(),
        secrets,
        events.clone(),
    );
    // Where the engine can, users' copies go into their streams with the changes themselves.
    if stores
        .outbox
        .outbox_route(std::sync::Arc::new(relay.user_copies()))
    {
        streams.written_outside(sessiond_sessions::security::USER_STREAMS);
    }
    let user_data = SecurityUserData::new(relay.clone(), events.clone(), stores.outbox.clone());
    Wired {
        events,
        relay,
        user_data,
    }
}
