//! What the session capability needs from storage.
//!
//! A session is one record addressed by its id, optionally owned by a user (the per-user index
//! answers "list my devices" and "log out everywhere"). The record carries two deadlines: the
//! sliding idle deadline and the fixed absolute one; it is expired once `now` reaches either.
//! Engines must never return an expired record, even before their sweeper deleted it.
//!
//! Concurrency: every mutation of an existing record is a compare-and-set on `version`, so a
//! read-modify-write (merge patch) can never lose a concurrent update, on one node or many.
//! `touch` is the exception: it moves only the idle deadline and `last_seen_at` and keeps the
//! version, because a read must not invalidate a client's `If-Match`.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Durability, Millis, Result};

mod event;
mod steps;
mod update;
pub use event::{changed_keys, DataEvent, EventPart};
pub use steps::Deletion;
pub use update::apply as apply_data_change;

/// One stored session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Opaque id (CSPRNG, URL-safe).
    pub id: String,
    /// Owning user, if any; indexed.
    pub user_id: Option<String>,
    /// The application's data: a JSON object, as JSON text.
    pub data: String,
    /// Client/device description (IP, user agent, ...) as JSON text, if given.
    pub device: Option<String>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change of `data`.
    pub updated_at: Millis,
    /// Last time the session was used (moved by `touch`, possibly lazily).
    pub last_seen_at: Millis,
    /// Length of the idle window; the idle deadline slides by this much on use.
    pub idle_ttl_ms: Millis,
    /// Sliding deadline.
    pub idle_expires_at: Millis,
    /// Fixed deadline.
    pub absolute_expires_at: Millis,
    /// Incremented by every change of `data` (and by a re-authentication); exposed as the
    /// ETag.
    pub version: u64,
    /// When the user last proved who they are (unix ms): set at create, kept by rotation,
    /// advanced by a re-authentication. An edge check compares it with the route's maximum
    /// age (RFC 9470's `max_age`). An ordinary field for the engines: written by insert,
    /// replace and rotate like `data`, never by `touch`; records stored before it existed
    /// read their `created_at`.
    pub auth_time: Millis,
    /// How the session was created; set at insert and never changed (engines keep the stored
    /// one on replace, like `user_id`).
    #[serde(default)]
    pub origin: SessionOrigin,
}

/// How a session was created, which decides whether it may prove its user's identity.
///
/// A session created with a service credential means the app's backend vouched for the user.
/// One created on a route the operator opened with `open_routes` (no credential) names
/// whatever user the anonymous caller typed, so it is data, never identity: it must not
/// authenticate sockets, pass an edge check or count against the budgets of keyed sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionOrigin {
    /// Created with a service credential (or in open development mode, where the whole
    /// server is the developer's). Rows stored before origins were recorded read as this.
    #[default]
    Service,
    /// Created on an `open_routes` route without a service credential.
    OpenRoute,
}

impl SessionOrigin {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionOrigin::Service => "service",
            SessionOrigin::OpenRoute => "open_route",
        }
    }

    /// Parses a stored name (`None` for an unknown one).
    pub fn parse(text: &str) -> Option<SessionOrigin> {
        match text {
            "service" => Some(SessionOrigin::Service),
            "open_route" => Some(SessionOrigin::OpenRoute),
            _ => None,
        }
    }
}

impl SessionRecord {
    /// The instant the record stops existing: the earlier of both deadlines.
    pub fn expires_at(&self) -> Millis {
        self.idle_expires_at.min(self.absolute_expires_at)
    }

    /// Whether the record is expired at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        now >= self.expires_at()
    }
}

/// Outcome of a compare-and-set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cas {
    /// The write happened.
    Written,
    /// The record exists but its version differs from the expected one.
    VersionMismatch,
    /// No live record with that id.
    Missing,
}

/// How [`SessionStore::update_session_data`] changes a session's data. Each carries a JSON
/// object as compact text, as `serde_json::to_string` writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataChange {
    /// The new data, whole.
    Replace(String),
    /// An RFC 7396 merge patch (an object: objects merge recursively, `null` deletes).
    MergePatch(String),
    /// Top-level members copied over the stored ones (`{...old, ...new}`).
    Shallow(String),
}

/// Outcome of [`SessionStore::update_session_data`].
#[derive(Clone, Debug, PartialEq)]
pub enum DataUpdate {
    /// The change is stored; the record as it now is.
    Written(SessionRecord),
    /// `if_match` was given and the stored version is `current`. Nothing was written.
    VersionMismatch {
        /// The stored version.
        current: u64,
    },
    /// No live record with that id.
    Missing,
    /// The data would be `bytes` long, above the limit. Nothing was written.
    TooLarge {
        /// Length of the data the change would have stored.
        bytes: usize,
    },
}

/// Outcome of [`SessionStore::rotate_session`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The record now lives under the new id; the old id is gone.
    Rotated,
    /// The old record exists but its version differs from the expected one.
    VersionMismatch,
    /// No live record under the old id.
    Missing,
    /// A live record already has the new id (a CSPRNG collision: pick another id). Nothing
    /// was written.
    IdTaken,
}

/// A compare-and-set of a whole record ([`SessionStore::replace_session`],
/// [`SessionStore::rotate_session`]): what is written, the version it was decided on and
/// the outbox event that goes with it, as one value the layers between the capability and
/// the engine (trait defaults) pass on unchanged.
#[derive(Clone, Debug)]
pub struct RecordWrite<'a> {
    /// The record to store; `record.version` is its new version.
    pub record: &'a SessionRecord,
    /// The stored version the write was decided on.
    pub expected_version: u64,
    /// The time liveness is judged at.
    pub now: Millis,
    /// Queued with the write, only when it happens (`None`: no event).
    pub event: Option<Vec<u8>>,
    /// How durable the write must be before the call returns.
    pub durability: Durability,
}

/// One change of a session's data ([`SessionStore::update_session_data`]): what to apply,
/// the conditions it is refused under and the outbox event that goes with it, as one value.
#[derive(Clone, Copy, Debug)]
pub struct DataWrite<'a> {
    /// The session.
    pub id: &'a str,
    /// What to apply to the stored data.
    pub change: &'a DataChange,
    /// The version the stored one must equal, if any.
    pub if_match: Option<u64>,
    /// The time of the change.
    pub now: Millis,
    /// Data longer than this is refused.
    pub max_data_bytes: usize,
    /// Queued with the write, its holes filled with the facts of this change; nothing is
    /// queued when the change is refused (`None`: no event).
    pub event: Option<&'a DataEvent>,
    /// How durable the write must be before the call returns.
    pub durability: Durability,
}

impl<'a> RecordWrite<'a> {
    /// A write of `record` decided on `expected_version` at `now`: no event, confirmed.
    pub fn new(record: &'a SessionRecord, expected_version: u64, now: Millis) -> Self {
        RecordWrite {
            record,
            expected_version,
            now,
            event: None,
            durability: Durability::Confirmed,
        }
    }

    /// The same write, queueing `event` with it.
    pub fn event(self, event: Option<Vec<u8>>) -> Self {
        RecordWrite { event, ..self }
    }

    /// The same write, returning at `durability`.
    pub fn durability(self, durability: Durability) -> Self {
        RecordWrite { durability, ..self }
    }
}

impl<'a> DataWrite<'a> {
    /// `change` of the session `id` at `now`, refused past `max_data_bytes`: whatever the
    /// stored version, no event, confirmed.
    pub fn new(id: &'a str, change: &'a DataChange, now: Millis, max_data_bytes: usize) -> Self {
        DataWrite {
            id,
            change,
            if_match: None,
            now,
            max_data_bytes,
            event: None,
            durability: Durability::Confirmed,
        }
    }

    /// The same change, only if the stored version is `if_match` (when given).
    pub fn if_match(self, if_match: Option<u64>) -> Self {
        DataWrite { if_match, ..self }
    }

    /// The same change, queueing `event` with it.
    pub fn event(self, event: Option<&'a DataEvent>) -> Self {
        DataWrite { event, ..self }
    }

    /// The same change, returning at `durability`.
    pub fn durability(self, durability: Durability) -> Self {
        DataWrite { durability, ..self }
    }
}

/// Builds the outbox event (see [`crate::outbox`]) for a record a bulk operation removed
/// (`None`: no event for this one). Engines call it inside their atomic step, so it must be
/// quick and must not block.
pub type EventFor = Arc<dyn Fn(&SessionRecord) -> Option<Vec<u8>> + Send + Sync>;

/// Storage for sessions.
///
/// The `*_with` operations and the writes ([`RecordWrite`], [`DataWrite`]) take an optional
/// outbox event (see [`crate::outbox`]): when the operation changes a record (insert
/// written, `Cas::Written`, `Rotation::Rotated`, a live record deleted) the engine queues
/// the event in the same atomic step, and queues nothing otherwise. The plain operations are
/// the same without an event.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new record. Ids are random 128-bit+ values, so an existing live id is an engine
    /// invariant violation; engines overwrite nothing and report `Ok(false)` in that case.
    async fn insert_session(&self, record: &SessionRecord, durability: Durability) -> Result<bool> {
        self.insert_session_with(record, None, durability).await
    }

    /// [`insert_session`](Self::insert_session), queueing `event` with the write.
    async fn insert_session_with(
        &self,
        record: &SessionRecord,
        event: Option<Vec<u8>>,
        durability: Durability,
    ) -> Result<bool>;

    /// The live record with this id, or `None` if absent or expired at `now`.
    async fn get_session(&self, id: &str, now: Millis) -> Result<Option<SessionRecord>>;

    /// Replaces the record `write.record.id` if it is live at `now` and its stored version
    /// equals `expected_version`, queueing the event with the write. `record.version` is the
    /// new version to store. The user id of a session never changes; engines keep the stored
    /// one.
    async fn replace_session(&self, write: RecordWrite<'_>) -> Result<Cas>;

    /// Changes the data of the live session `id` at `now` in one atomic step: applies
    /// `change` to the stored data (never to a copy the caller read earlier, so concurrent
    /// merges from any number of nodes lose nothing), refuses data longer than
    /// `max_data_bytes`, and, like a data change through `replace_session`, sets `updated_at`
    /// and `last_seen_at` to `now`, slides the idle deadline to `now + idle_ttl_ms` (never
    /// backward) and increments the version. With `if_match` the stored version must equal
    /// it. The event ([`DataEvent`]) is queued with the write. The default reads, applies and
    /// compare-and-sets until no other writer came between; an engine whose read is a network
    /// round trip should do it in one.
    async fn update_session_data(&self, write: DataWrite<'_>) -> Result<DataUpdate> {
        update::read_apply_swap(self, write).await
    }

    /// Moves the live record `old_id` to the id `write.record.id` in one atomic step: if
    /// `old_id` is live at `now` with `expected_version`, the record (new id, new version) is
    /// stored, `old_id` is deleted and the event queued, so no reader ever sees both ids or
    /// neither. The stored `user_id` and `origin` of the old record are kept (as by
    /// `replace_session`); the per-user index follows (it may lag the records briefly where
    /// it lives apart, as after inserts).
    async fn rotate_session(&self, old_id: &str, write: RecordWrite<'_>) -> Result<Rotation>;

    /// The id to rotate `old_id` to, given `fresh`, a new CSPRNG id. Engines whose atomic
    /// step needs both ids in one place (a Redis Cluster slot) derive one from `fresh` that
    /// lands there without losing its randomness; the others take `fresh` as is.
    fn rotation_id(&self, old_id: &str, fresh: String) -> String {
        let _ = old_id;
        fresh
    }

    /// Moves the idle deadline forward (never backward) and sets `last_seen_at`, keeping the
    /// version. Returns false if no live record exists.
    async fn touch_session(
        &self,
        id: &str,
        idle_expires_at: Millis,
        last_seen_at: Millis,
        now: Millis,
        durability: Durability,
    ) -> Result<bool>;

    /// Slides the idle deadline of the live session `id` to `now` + its idle window and sets
    /// `last_seen_at` to `now` (neither backward), keeping the version, as one step; returns
    /// the record as it now is, `None` when no live record exists. The default reads, then
    /// touches; an engine whose read is a network round trip should do it in one.
    async fn touch_session_now(
        &self,
        id: &str,
        now: Millis,
        durability: Durability,
    ) -> Result<Option<SessionRecord>> {
        steps::read_then_touch(self, id, now, durability).await
    }

    /// Deletes the live session `id` at `now` (with `if_match`, only at that version) and
    /// queues `event` with its holes filled from the record deleted (its version, owner and
    /// origin; no keys changed), for a caller that has not read the record. A record that is
    /// present but expired is deleted without event and reported [`Deletion::Missing`]. The
    /// default reads, then deletes; an engine whose read is a network round trip should do it
    /// in one.
    async fn delete_session_checked(
        &self,
        id: &str,
        if_match: Option<u64>,
        now: Millis,
        event: Option<&DataEvent>,
        durability: Durability,
    ) -> Result<Deletion> {
        steps::read_then_delete(self, id, if_match, now, event, durability).await
    }

    /// [`insert_session_with`](Self::insert_session_with) in one step with the per-user cap,
    /// for an engine where listing the user's sessions first is a round trip of its own: the
    /// record is inserted only when the engine can tell at once that its user has fewer than
    /// `room` sessions (of any origin; counting ones not yet cleaned up is allowed), so no
    /// eviction is due. `Ok(None)`: nothing was written (the user may be at the cap, or the
    /// engine cannot tell), and the caller lists, evicts and inserts as usual. The default
    /// always answers `None`.
    async fn insert_session_if_room(
        &self,
        record: &SessionRecord,
        room: usize,
        event: Option<&[u8]>,
        durability: Durability,
    ) -> Result<Option<bool>> {
        let _ = (record, room, event, durability);
        Ok(None)
    }

    /// Deletes a record; true if a live one existed.
    async fn delete_session(&self, id: &str, now: Millis, durability: Durability) -> Result<bool> {
        self.delete_session_with(id, now, None, durability).await
    }

    /// [`delete_session`](Self::delete_session), queueing `event` if a live record went.
    async fn delete_session_with(
        &self,
        id: &str,
        now: Millis,
        event: Option<Vec<u8>>,
        durability: Durability,
    ) -> Result<bool>;

    /// Live sessions of a user, oldest first (by `created_at`, then id), at most `limit`.
    async fn list_user_sessions(
        &self,
        user_id: &str,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<SessionRecord>>;

    /// Deletes every session of `user_id` except `except`; returns the deleted ids.
    async fn delete_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: Millis,
        durability: Durability,
    ) -> Result<Vec<String>> {
        self.delete_user_sessions_with(user_id, except, now, None, durability)
            .await
    }

    /// [`delete_user_sessions`](Self::delete_user_sessions), queueing `events(record)` for
    /// every live record deleted, in the same step.
    async fn delete_user_sessions_with(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: Millis,
        events: Option<EventFor>,
        durability: Durability,
    ) -> Result<Vec<String>>;

    /// Deletes up to `batch` records expired at `now`; returns how many were deleted. Engines
    /// with native expiry may return 0.
    async fn sweep_sessions(&self, now: Millis, batch: usize) -> Result<usize> {
        self.sweep_sessions_with(now, batch, None).await
    }

    /// [`sweep_sessions`](Self::sweep_sessions), queueing `events(record)` for every expired
    /// record deleted, in the same step. Every engine reports each expired record exactly
    /// once, with the record as it ended, however many sweeps run at once (one per node),
    /// and never one that was touched, deleted or rotated away before its deadline: an engine
    /// with native expiry keeps records past their deadline long enough for its sweep to
    /// delete them (the Redis engine: `session_expiry_grace_ms`).
    async fn sweep_sessions_with(
        &self,
        now: Millis,
        batch: usize,
        events: Option<EventFor>,
    ) -> Result<usize>;
}
