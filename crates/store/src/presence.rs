//! Cluster-wide presence: which connections are open, per user and per channel, on every node.
//!
//! A node that dies cannot say goodbye, so membership is a lease: each member carries an
//! expire-at that its node pushes forward periodically ([`PresenceStore::refresh`]), and every
//! read drops members whose lease ran out. A dead node's sockets therefore vanish at most one
//! lease after its last refresh, without any node having to notice the death.
//!
//! Transitions ("the set became non-empty", "the set became empty") are decided inside the
//! engine, atomically with the change that caused them, so exactly one caller in the cluster
//! learns of each, with a generation number. The caller may announce it later (debounce) and
//! asks [`PresenceStore::settle`] first: only the newest transition, and only one that differs
//! from the last announced state, is announced — once, by one node.
//!
//! Sets and member ids are opaque to the engine (the hub names them); an info is an opaque
//! string stored with the member.

use async_trait::async_trait;

use crate::{Millis, Result};

/// One member of a set and what its node says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceMember {
    /// The member id (a connection id).
    pub id: String,
    /// Opaque info (JSON written by the hub).
    pub info: String,
}

/// What a [`PresenceStore::join`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Joined {
    /// False when the set already held `limit` live members (nothing changed).
    pub admitted: bool,
    /// Live members now (this one included when admitted).
    pub live: usize,
    /// `Some(generation)` when this join made the set non-empty (went online).
    pub online: Option<u64>,
}

/// What a [`PresenceStore::leave`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Left {
    /// Live members left.
    pub live: usize,
    /// `Some(generation)` when this leave made the set empty (went offline).
    pub offline: Option<u64>,
}

/// Members whose lease ran out, removed by one [`PresenceStore::sweep`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The set.
    pub set: String,
    /// The removed members.
    pub members: Vec<PresenceMember>,
    /// `Some(generation)` when the removal made the set empty.
    pub offline: Option<u64>,
}

/// Leased set membership with atomic transitions, shared by every node.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Adds (or updates the info and lease of) `member` in `set`, leased until `now + ttl_ms`.
    /// A new member is refused when the set already holds `limit` live members.
    async fn join(
        &self,
        set: &str,
        member: &PresenceMember,
        now: Millis,
        ttl_ms: Millis,
        limit: usize,
    ) -> Result<Joined>;

    /// Removes `id` from `set` (absent: nothing to remove, the counts are still reported).
    async fn leave(&self, set: &str, id: &str, now: Millis) -> Result<Left>;

    /// Extends the lease of each `(set, member)` to `now + ttl_ms` and rewrites its info;
    /// a member no longer in its set (left, or expired and swept) stays out and is returned
    /// as `(set, id)` (its node was too slow to renew it: it may join again).
    async fn refresh(
        &self,
        members: &[(String, PresenceMember)],
        now: Millis,
        ttl_ms: Millis,
    ) -> Result<Vec<(String, String)>>;

    /// The live members of `set`, in id order.
    async fn members(&self, set: &str, now: Millis) -> Result<Vec<PresenceMember>>;

    /// The info of `id` if it is a live member of `set`.
    async fn member(&self, set: &str, id: &str, now: Millis) -> Result<Option<String>>;

    /// Removes expired members of up to `max_sets` sets that have some; each removal is
    /// reported to exactly one caller cluster-wide.
    async fn sweep(&self, now: Millis, max_sets: usize) -> Result<Vec<Expired>>;

    /// True exactly once for the transition `generation` of `set` to `online`, and only if
    /// no later transition happened and the last settled state was the other one.
    async fn settle(&self, set: &str, generation: u64, online: bool) -> Result<bool>;
}
