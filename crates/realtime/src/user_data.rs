//! What the hub holds about one user — the persisted state (games, presence, grants and
//! grant revocations) and the open connections of every node — for the devices view, the
//! export and the erasure of `/v1/users/{u}` (issue 19 §5).
//!
//! Connections come from the cluster's presence sets when the hub runs on several nodes
//! (each node's own sockets first-hand, the others' as of their last lease renewal), so a
//! user's devices and their export are the same whichever node answers.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use sessiond_http::user_data::UserDataSource;
use sessiond_http::ApiResult;
use sessiond_store::Durability;

use crate::ending::{EndReason, SessionEnded};
use crate::hub::{storage_error, Hub};
use crate::state::{Presence, UserState};

impl Hub {
    /// The user's open connections on every node, each with the user's `presence` (from the
    /// persisted state; `offline` when no socket is open anywhere).
    pub async fn device_connections(&self, user: &str) -> ApiResult<Vec<Value>> {
        self.check_id("user id", user)?;
        let mut list = self.inner.describe_connections(user).await?;
        if list.is_empty() {
            return Ok(list);
        }
        let presence = self
            .stored_state(user)
            .await?
            .map_or(Presence::Online, |s| {
                // A state still saying offline while sockets are open is between two writes of
                // the connect path: the sockets are what is true.
                match s.presence {
                    Presence::Offline => Presence::Online,
                    other => other,
                }
            });
        for conn in &mut list {
            conn["presence"] = json!(presence.as_str());
        }
        Ok(list)
    }

    /// The user's persisted state, `None` for a user never seen (or erased). On several
    /// nodes read from the store: another node may have changed it.
    async fn stored_state(&self, user: &str) -> ApiResult<Option<UserState>> {
        let mut guard = self.inner.users.lock(user).await;
        let loaded = match self.inner.presence.get() {
            Some(_) => guard.reload().await,
            None => guard.load().await,
        };
        Ok(loaded.map_err(storage_error)?.cloned())
    }

    /// The hub as a [`UserDataSource`] (part `realtime` of the export).
    pub fn user_data(&self) -> Arc<dyn UserDataSource> {
        Arc::new(RealtimeData { hub: self.clone() })
    }
}

struct RealtimeData {
    hub: Hub,
}

#[async_trait]
impl UserDataSource for RealtimeData {
    fn name(&self) -> &'static str {
        "realtime"
    }

    async fn export(&self, user_id: &str) -> ApiResult<Value> {
        self.hub.check_id("user id", user_id)?;
        let state = self.hub.stored_state(user_id).await?;
        let connections = self.hub.inner.describe_connections(user_id).await?;
        Ok(json!({"state": state, "connections": connections}))
    }

    /// Deletes the persisted state, then closes every socket of the user on every node
    /// (v1/SSE: `session_ended` `erased`, then the logout close; seed C: its logout close).
    /// In this order, the disconnects that follow find the state absent and leave it so.
    async fn erase(&self, user_id: &str) -> ApiResult<()> {
        self.hub.check_id("user id", user_id)?;
        let mut guard = self.hub.inner.users.lock(user_id).await;
        guard
            .delete(Durability::Confirmed)
            .await
            .map_err(storage_error)?;
        drop(guard);
        self.hub.session_ended(&SessionEnded {
            user_id: user_id.to_string(),
            session_ids: Vec::new(),
            all: true,
            reason: EndReason::Erased,
        });
        Ok(())
    }
}
