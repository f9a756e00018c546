//! `GET /v1/stream-producers/<name>?after=&limit=`: the idempotent producers a stream knows
//! (a sessiond extension for operators, e.g. the admin console's streams page).
//!
//! Why it is shaped this way:
//! - **Its own path.** The stream name is a catch-all that may contain `/`, so the producers
//!   cannot hang below `/v1/stream/<name>` or `/v1/streams/<name>` without being mistaken
//!   for a stream name; a separate prefix keeps every name addressable.
//! - **Same guard as the listing.** The access guard authorizes it like a read of `<name>`
//!   (a tenant key within its prefixes, a full key everywhere) but refuses read tokens: a
//!   token is minted for one user's reads, and producer ids are the writers' business.
//! - **What an append would see.** Rows are read under the stream's object lock and overlaid
//!   with the states the node holds (in-flight commits, legacy states kept in the metadata
//!   until the next commit moves them into rows), so a listed epoch/seq is the one the next
//!   append is checked against. Pages go in producer-id (byte) order; `next_after` is the
//!   last id of a full page, null at the end.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond_store::now_ms;

use crate::error::{StreamError, StreamResult};
use crate::list::page_limit;
use crate::protocol::PRODUCERS_PREFIX;
use crate::service::{stream, Streams};
use crate::state::ProducerState;

/// The query string.
#[derive(Debug, Default, Deserialize)]
pub struct ProducersQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// Handles the listing (the access guard has authorized the caller on the stream).
pub async fn list(
    State(streams): State<Streams>,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<ProducersQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let Query(query) = query.map_err(|e| StreamError::bad_request(e.body_text()))?;
        page(&streams, uri.path(), query).await
    }
    .await;
    let no_store = [("cache-control", "no-store")];
    result.map_or_else(IntoResponse::into_response, |page| {
        (no_store, Json(page)).into_response()
    })
}

async fn page(streams: &Streams, path: &str, query: ProducersQuery) -> StreamResult<Value> {
    let rest = path.strip_prefix(PRODUCERS_PREFIX).unwrap_or_default();
    let full = format!("{}{rest}", crate::protocol::STREAM_PREFIX);
    let name = crate::headers::stream_name(&full, streams.config.max_name_bytes)?;
    let limit = page_limit(query.limit.as_deref(), streams.config.max_list_limit)?;
    let after = query.after.as_deref();
    let g = streams.lock(name).await?;
    let Some(s) = stream(&g).filter(|s| !s.info.soft_deleted && !s.info.expired(now_ms())) else {
        return Err(StreamError::not_found());
    };
    let rows = streams
        .store
        .list_stream_producers(name, after, limit)
        .await?;
    // id -> (state, last accepted write in unix ms, when known)
    let mut page: BTreeMap<String, (ProducerState, Option<i64>)> = BTreeMap::new();
    for row in rows {
        let state = ProducerState::decode(name, &row.state)?;
        page.insert(row.id, (state, Some(row.used_at)));
    }
    let held = g.state().map(|o| o.producers.iter());
    for (id, state) in held.into_iter().flatten().chain(s.info.producers.iter()) {
        if after.is_none_or(|a| id.as_str() > a) {
            let used_at = page.get(id).and_then(|(_, at)| *at);
            page.insert(id.clone(), (state.clone(), used_at));
        }
    }
    let full_page = page.len() >= limit;
    let producers: Vec<Value> = page
        .into_iter()
        .take(limit)
        .map(|(id, (state, used_at))| {
            json!({
                "id": id,
                "epoch": state.epoch,
                "seq": state.seq,
                "last_seen_at": used_at.map(crate::time::format_rfc3339),
            })
        })
        .collect();
    let next = producers
        .last()
        .filter(|_| full_page)
        .and_then(|p| p["id"].as_str().map(str::to_owned));
    Ok(json!({ "producers": producers, "next_after": next }))
}
