//! What the object runtime needs from storage: per-object state and per-object alarms.
//!
//! An object is addressed by `(kind, key)`: the kind names the capability's class of object
//! (e.g. `client`, `user`), the key its instance. Its state is an opaque byte string the
//! capability encodes. Objects of a kind can be enumerated in key order with a prefix and a
//! cursor (the Durable Objects feature users keep asking for).
//!
//! Alarms are named timers of one object (several per object, unlike DO's single alarm). They
//! are persisted, so they survive restarts; the runtime fires them at least once and retries
//! failures with backoff, counting attempts in `attempt`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Durability, Millis, Result};

/// One persisted alarm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// Object kind.
    pub kind: String,
    /// Object key.
    pub key: String,
    /// Alarm name, unique within the object.
    pub name: String,
    /// When it is due.
    pub due_at: Millis,
    /// Failed attempts so far (0 for a fresh alarm).
    pub attempt: u32,
    /// Capability-defined payload.
    pub payload: String,
}

/// Storage for the object runtime.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// The object's state, if it exists.
    async fn load_object(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>>;

    /// Creates or overwrites the object's state.
    async fn save_object(
        &self,
        kind: &str,
        key: &str,
        state: &[u8],
        durability: Durability,
    ) -> Result<()>;

    /// Replaces the object's state with `state` (or deletes the state, not its alarms, when
    /// `None`) only if the stored state is exactly `expected` (`None`: the object must not
    /// exist), in one atomic step; true if written, false (nothing changed) otherwise.
    ///
    /// The compare-and-set that lets processes sharing one store (several nodes on Redis)
    /// change one object without a cross-process lock: a process that decided on state it
    /// read earlier loses to any write made since, re-reads and decides again.
    async fn swap_object(
        &self,
        kind: &str,
        key: &str,
        expected: Option<&[u8]>,
        state: Option<&[u8]>,
        durability: Durability,
    ) -> Result<bool>;

    /// Deletes the object's state and all its alarms; true if the state existed.
    async fn delete_object(&self, kind: &str, key: &str, durability: Durability) -> Result<bool>;

    /// Keys of objects of `kind` that start with `prefix`, strictly after `after` in byte
    /// order, ascending, at most `limit`.
    async fn list_objects(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>>;

    /// Creates or replaces the alarm `(kind, key, name)`.
    async fn put_alarm(&self, alarm: &AlarmRecord, durability: Durability) -> Result<()>;

    /// Deletes the alarm if it exists and, when `due_at` is given, is still due at that time
    /// (so completing a fired alarm does not delete one the handler re-armed). True if deleted.
    async fn delete_alarm(
        &self,
        kind: &str,
        key: &str,
        name: &str,
        due_at: Option<Millis>,
        durability: Durability,
    ) -> Result<bool>;

    /// Atomically replaces the alarm `(alarm.kind, alarm.key, alarm.name)` with `alarm` if it
    /// exists and is due exactly at `expected_due_at`; false (nothing written) otherwise. The
    /// runtime claims and reschedules alarms with it, so a crash can never lose one.
    async fn reschedule_alarm(
        &self,
        alarm: &AlarmRecord,
        expected_due_at: Millis,
        durability: Durability,
    ) -> Result<bool>;

    /// Alarms of one object, by name.
    async fn object_alarms(&self, kind: &str, key: &str) -> Result<Vec<AlarmRecord>>;

    /// Alarms due at or before `until`, earliest first, at most `limit`.
    async fn due_alarms(&self, until: Millis, limit: usize) -> Result<Vec<AlarmRecord>>;

    /// The earliest due time of any alarm.
    async fn next_alarm_at(&self) -> Result<Option<Millis>>;
}
