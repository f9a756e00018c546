//! A data change on a shared engine, applied by the store in one step.
//!
//! On a shared engine nothing is kept in memory (another node may have changed the record),
//! so reading the record before writing it would be a round trip of its own, and with several
//! nodes writing one session a lost compare-and-set would cost more. The store applies the
//! change to what it holds instead (`SessionStore::update_session_data`: one Redis round
//! trip, however many nodes write the session).

use serde_json::Value;
use sessiond_http::{ApiError, ApiResult};
use sessiond_store::{now_ms, DataChange, DataUpdate, Durability, SessionRecord};

use super::{not_an_object, not_found, SessionService, Update};

impl SessionService {
    /// Applies `update` through the store (the caller holds the session's lock).
    pub(super) async fn update_in_store(
        &self,
        id: &str,
        update: &Update,
        if_match: Option<u64>,
        durability: Durability,
    ) -> ApiResult<SessionRecord> {
        let change = match update {
            Update::Replace(data) => DataChange::Replace(
                self.encode_value("session data", &Value::Object(data.clone()))?,
            ),
            Update::Shallow(addition) => {
                DataChange::Shallow(serde_json::to_string(addition).map_err(ApiError::internal)?)
            }
            // A patch that is not an object replaces the whole data with a non-object.
            Update::MergePatch(patch) if !patch.is_object() => {
                return Err(not_an_object());
            }
            Update::MergePatch(patch) => {
                DataChange::MergePatch(serde_json::to_string(patch).map_err(ApiError::internal)?)
            }
        };
        let limit = self.config.max_value_bytes;
        match self
            .store
            .update_session_data(id, &change, if_match, now_ms(), limit, durability)
            .await?
        {
            DataUpdate::Written(record) => Ok(record),
            DataUpdate::Missing => Err(not_found()),
            DataUpdate::VersionMismatch { current } => Err(ApiError::precondition_failed(format!(
                "session is at version {current}, not {}",
                if_match.unwrap_or(0)
            ))),
            DataUpdate::TooLarge { bytes } => Err(ApiError::too_large(format!(
                "session data is {bytes} bytes, above the limit of {limit} bytes"
            ))),
        }
    }
}
