//! What each capability holds about one user, for `GET /v1/users/{u}/export` and
//! `DELETE /v1/users/{u}?confirm={u}` (issue 19 §5): every capability that keys data by a user
//! id registers one source with the server, which asks each in turn, so the export and the
//! erasure cannot forget a capability the route's author did not know about.

use async_trait::async_trait;

use crate::ApiError;

/// One capability's data about a user.
#[async_trait]
pub trait UserDataSource: Send + Sync {
    /// The key of this source's part in the export document (`"sessions"`, `"realtime"`,
    /// `"security_events"`, ...).
    fn name(&self) -> &'static str;

    /// Everything this source holds keyed by `user_id`, as one JSON value.
    async fn export(&self, user_id: &str) -> Result<serde_json::Value, ApiError>;

    /// Deletes everything this source holds keyed by `user_id` (idempotent: erasing an unknown
    /// user succeeds).
    async fn erase(&self, user_id: &str) -> Result<(), ApiError>;
}
