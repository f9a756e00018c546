//! The sessions capability as a [`UserDataSource`]: a user's sessions (with their device
//! descriptions and data) are what it holds keyed by the user. Erasure deletes them all and
//! announces the ending as `erased`, so the hub closes what they opened on every node.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sessiond_http::user_data::UserDataSource;
use sessiond_http::{ApiError, ApiResult};

use crate::routes::native::SessionView;
use crate::service::SessionService;

impl SessionService {
    /// The service as a [`UserDataSource`] (part `sessions` of the export).
    pub fn user_data(&self) -> Arc<dyn UserDataSource> {
        Arc::new(SessionsData {
            sessions: self.clone(),
        })
    }
}

struct SessionsData {
    sessions: SessionService,
}

#[async_trait]
impl UserDataSource for SessionsData {
    fn name(&self) -> &'static str {
        "sessions"
    }

    /// Every live session of the user, as the session resource, oldest first.
    async fn export(&self, user_id: &str) -> ApiResult<Value> {
        let records = self.sessions.list_user(user_id).await?;
        let views: Vec<SessionView<'_>> = records.iter().map(SessionView::of).collect();
        serde_json::to_value(views).map_err(ApiError::internal)
    }

    async fn erase(&self, user_id: &str) -> ApiResult<()> {
        let erased = self.sessions.erase_user(user_id).await?;
        metrics::counter!("sessiond_sessions_erased_total").increment(erased.len() as u64);
        Ok(())
    }
}
