//! Service-key APIs under `/v1/realtime`: hub statistics and a user's connections.
//!
//! `GET /v1/realtime/stats` reports how many users' state objects are resident in memory and
//! how many sockets are open — the observable side of idle eviction.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sessiond_http::ApiResult;

use crate::auth::{identify, require_service};
use crate::hub::Hub;

/// The admin routes.
pub fn router() -> Router<Hub> {
    Router::new()
        .route("/v1/realtime/stats", get(stats))
        .route("/v1/realtime/users/{user}/connections", get(connections))
}

/// 401/403 unless the request carries a service key (or the server is in open mode).
pub async fn service(hub: &Hub, headers: &HeaderMap) -> ApiResult<()> {
    let caller = identify(hub.keys(), hub.authority(), headers, None, &[], true).await?;
    require_service(&caller)
}

async fn stats(State(hub): State<Hub>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    service(&hub, &headers).await?;
    Ok(Json(json!({
        "resident_users": hub.resident_users(),
        "connections": hub.connections(),
    })))
}

async fn connections(
    State(hub): State<Hub>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    service(&hub, &headers).await?;
    hub.check_id("user id", &user)?;
    let list: Vec<Value> = hub
        .user_connections(&user)
        .iter()
        .map(|c| {
            json!({
                "id": c.id.to_string(),
                "device_id": &*c.device_id,
                "connected_at": c.connected_at,
                "ip": c.ip.map(|ip| ip.to_string()),
                "protocol": "seed",
            })
        })
        .collect();
    Ok(Json(json!({ "user_id": user, "connections": list })))
}
