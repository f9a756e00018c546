//! The portable way to change a session's data in one call: read, apply, compare-and-set,
//! again on a lost race. Engines whose every round trip is cheap (in-process, a local file)
//! use it as is; engines where the read is a network round trip do the whole change in one
//! atomic step instead (Redis: a script).

use serde_json::{Map, Value};

use super::{Cas, DataChange, DataUpdate, DataWrite, RecordWrite, SessionStore};
use crate::merge::{merge_patch, shallow_merge};
use crate::{Result, StoreError};

/// Lost races after which the default gives up (each one means another writer succeeded).
const MAX_ATTEMPTS: usize = 64;

/// The default of [`SessionStore::update_session_data`].
pub(super) async fn read_apply_swap<S: SessionStore + ?Sized>(
    store: &S,
    w: DataWrite<'_>,
) -> Result<DataUpdate> {
    for _ in 0..MAX_ATTEMPTS {
        let Some(current) = store.get_session(w.id, w.now).await? else {
            return Ok(DataUpdate::Missing);
        };
        if w.if_match.is_some_and(|v| v != current.version) {
            return Ok(DataUpdate::VersionMismatch {
                current: current.version,
            });
        }
        let data = apply(&current.data, w.change)?;
        if data.len() > w.max_data_bytes {
            return Ok(DataUpdate::TooLarge { bytes: data.len() });
        }
        let mut next = current.clone();
        next.data = data;
        next.updated_at = w.now;
        next.last_seen_at = w.now;
        next.idle_expires_at = w
            .now
            .saturating_add(current.idle_ttl_ms)
            .max(current.idle_expires_at);
        next.version = current.version + 1;
        let queued = w.event.map(|e| e.render(&current.data, &next));
        let swap = RecordWrite::new(&next, current.version, w.now)
            .event(queued)
            .durability(w.durability);
        match store.replace_session(swap).await? {
            Cas::Written => return Ok(DataUpdate::Written(next)),
            Cas::Missing => return Ok(DataUpdate::Missing),
            Cas::VersionMismatch => {}
        }
    }
    Err(StoreError::Unavailable(format!(
        "session {} lost {MAX_ATTEMPTS} races in a row",
        w.id
    )))
}

/// The data text after `change`.
pub fn apply(stored: &str, change: &DataChange) -> Result<String> {
    let object = |text: &str, what: &str| {
        serde_json::from_str::<Map<String, Value>>(text)
            .map_err(|e| StoreError::Corrupt(format!("{what} is not a JSON object: {e}")))
    };
    let merged = match change {
        DataChange::Replace(text) => return Ok(text.clone()),
        DataChange::Shallow(text) => {
            let mut old = object(stored, "stored session data")?;
            shallow_merge(&mut old, object(text, "the addition")?);
            Value::Object(old)
        }
        DataChange::MergePatch(text) => {
            let mut old = Value::Object(object(stored, "stored session data")?);
            merge_patch(&mut old, &Value::Object(object(text, "the patch")?));
            old
        }
    };
    serde_json::to_string(&merged).map_err(|e| StoreError::Corrupt(e.to_string()))
}
