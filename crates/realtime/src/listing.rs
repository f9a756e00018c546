//! Node listings for operators (service key): who is connected to this node and which
//! channels it holds, one page at a time.
//!
//! The per-user and per-channel APIs answer "is alice online?"; an operator looking at a node
//! first needs "who is here at all?". Both listings are this node's view (sockets and channel
//! subscribers live in the node that accepted them); on several nodes, ask each node. Pages
//! are ordered by name with an exclusive `after` cursor, so a listing that changes between
//! pages never repeats an entry, and `realtime.max_list_page` bounds each answer.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond_http::{ApiError, ApiResult};

use crate::hub::Hub;
use crate::presence::conn_json;

/// The listing routes (wrapped in the service-key layer by [`crate::router`]).
pub fn router() -> Router<Hub> {
    Router::new()
        .route("/v1/realtime/connections", get(connected_users))
        .route("/v1/realtime/channels", get(channels))
}

/// `?after=<name>&limit=<n>&prefix=<p>`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    prefix: String,
}

/// The page asked for, or a JSON 400 (axum's own rejection is plain text).
fn page(query: Result<Query<Page>, QueryRejection>) -> ApiResult<Page> {
    query
        .map(|Query(page)| page)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

impl Page {
    fn limit(&self, hub: &Hub) -> ApiResult<usize> {
        match self.limit {
            Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
            Some(n) => Ok(n.min(hub.config().max_list_page)),
            None => Ok(100.min(hub.config().max_list_page)),
        }
    }

    /// The names of this page from `names` (any order), sorted, and the cursor of the next.
    fn select(&self, mut names: Vec<Arc<str>>, limit: usize) -> (Vec<Arc<str>>, Option<String>) {
        names.retain(|n| {
            n.starts_with(&self.prefix) && self.after.as_deref().is_none_or(|a| &**n > a)
        });
        names.sort_unstable();
        names.dedup();
        let next = (names.len() > limit).then(|| names[limit - 1].to_string());
        names.truncate(limit);
        (names, next)
    }
}

async fn connected_users(
    State(hub): State<Hub>,
    query: Result<Query<Page>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let page = page(query)?;
    let limit = page.limit(&hub)?;
    let all = hub.inner.conns.all();
    let users = all.iter().map(|c| c.user_id.clone()).collect();
    let (users, next) = page.select(users, limit);
    let users: Vec<Value> = users
        .iter()
        .map(|user| {
            let conns: Vec<Value> = all
                .iter()
                .filter(|c| c.user_id == *user)
                .map(|c| conn_json(c))
                .collect();
            json!({"user_id": &**user, "connections": conns})
        })
        .collect();
    Ok(Json(json!({
        "connections": hub.connections(),
        "users": users,
        "next_after": next,
    })))
}

async fn channels(
    State(hub): State<Hub>,
    query: Result<Query<Page>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let page = page(query)?;
    let limit = page.limit(&hub)?;
    let (names, next) = page.select(hub.channels().names(), limit);
    let list: Vec<Value> = names
        .iter()
        .filter_map(|name| hub.channels().get(name))
        .map(|channel| {
            let present = channel.presence().as_object().map_or(0, |p| p.len());
            json!({
                "channel": &*channel.name,
                "subscribers": channel.subscribers().len(),
                "present_users": present,
                "history_bytes": channel.history_bytes(),
            })
        })
        .collect();
    Ok(Json(json!({"channels": list, "next_after": next})))
}
