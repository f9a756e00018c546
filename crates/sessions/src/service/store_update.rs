//! A data change on a shared engine, applied by the store in one step.
//!
//! On a shared engine nothing is kept in memory (another node may have changed the record),
//! so reading the record before writing it would be a round trip of its own, and with several
//! nodes writing one session a lost compare-and-set would cost more. The store applies the
//! change to what it holds instead (`SessionStore::update_session_data`: one Redis round
//! trip, however many nodes write the session), and writes the `session.context_changed`
//! event in the same step: the service cannot name the changed keys or the new version
//! without that read, so it hands the store the event with those holes
//! (`SecurityEvents::data_changed`) and the store fills them.

use serde_json::Value;
use sessiond_http::{ApiError, ApiResult};
use sessiond_store::{now_ms, DataChange, DataUpdate, DataWrite, Durability, SessionRecord};

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
        let event = self.security.as_ref().map(|s| s.data_changed(id));
        match self
            .store
            .update_session_data(
                DataWrite::new(id, &change, now_ms(), limit)
                    .if_match(if_match)
                    .event(event.as_ref())
                    .durability(durability),
            )
            .await?
        {
            DataUpdate::Written(record) => {
                self.queued();
                Ok(record)
            }
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
