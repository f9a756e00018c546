//! The portable defaults of the one-step session operations (touch and return, checked
//! delete): two calls, a read and then the write. Engines whose every call is cheap
//! (in-process, a local file) use them as they are; an engine where each call is a network
//! round trip does the read and the write in one atomic step instead (Redis: a script), so a
//! shared-engine node pays one round trip per session write.

use super::{DataEvent, SessionRecord, SessionStore};
use crate::{Durability, Millis, Result};

/// Outcome of [`SessionStore::delete_session_checked`].
#[derive(Clone, Debug, PartialEq)]
pub enum Deletion {
    /// The live record was deleted; it as it was.
    Deleted(SessionRecord),
    /// `if_match` was given and the stored version is `current`. Nothing was deleted.
    VersionMismatch {
        /// The stored version.
        current: u64,
    },
    /// No live record with that id.
    Missing,
}

/// The default of [`SessionStore::touch_session_now`].
pub(super) async fn read_then_touch<S: SessionStore + ?Sized>(
    store: &S,
    id: &str,
    now: Millis,
    durability: Durability,
) -> Result<Option<SessionRecord>> {
    let Some(mut record) = store.get_session(id, now).await? else {
        return Ok(None);
    };
    let slid = now.saturating_add(record.idle_ttl_ms);
    if !store.touch_session(id, slid, now, now, durability).await? {
        return Ok(None);
    }
    record.idle_expires_at = record.idle_expires_at.max(slid);
    record.last_seen_at = record.last_seen_at.max(now);
    Ok(Some(record))
}

/// The default of [`SessionStore::delete_session_checked`].
pub(super) async fn read_then_delete<S: SessionStore + ?Sized>(
    store: &S,
    id: &str,
    if_match: Option<u64>,
    now: Millis,
    event: Option<&DataEvent>,
    durability: Durability,
) -> Result<Deletion> {
    let Some(current) = store.get_session(id, now).await? else {
        // An expired record still stored goes without an event.
        store.delete_session_with(id, now, None, durability).await?;
        return Ok(Deletion::Missing);
    };
    if if_match.is_some_and(|v| v != current.version) {
        return Ok(Deletion::VersionMismatch {
            current: current.version,
        });
    }
    let queued = event.map(|e| e.render(&current.data, &current));
    match store
        .delete_session_with(id, now, queued, durability)
        .await?
    {
        true => Ok(Deletion::Deleted(current)),
        false => Ok(Deletion::Missing),
    }
}
