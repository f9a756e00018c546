//! `DELETE /v1/stream/<path>`: 204, then 404 (or 410 while forks keep it soft-deleted).
//!
//! A stream that forks still read is only marked soft-deleted (its data stays for them);
//! otherwise its cold segments, chunks and metadata are removed, and if it was itself a fork
//! its reference on the source is released in the same engine transaction, which may delete
//! soft-deleted ancestors in turn. Locks are only ever taken child-then-parent (fork creation
//! and the release) or one at a time (the cascade up the chain): no lock cycles.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sessiond_store::now_ms;

use crate::error::{StreamError, StreamResult};
use crate::service::{stream, Streams};

/// Handles a DELETE.
pub async fn delete(streams: &Streams, path: &str) -> StreamResult<Response> {
    // Only the soft delete is a commit that can lose a race (and then wrote nothing); the
    // hard delete is unconditional and the source release retries on its own.
    streams.retry_stale(|| delete_once(streams, path)).await
}

async fn delete_once(streams: &Streams, path: &str) -> StreamResult<Response> {
    let mut g = streams.lock_live(path, now_ms()).await?;
    let Some(current) = stream(&g).cloned() else {
        return Err(StreamError::not_found());
    };
    if current.info.forks > 0 {
        let mut info = current.info;
        info.soft_deleted = true;
        streams
            .commit(&mut g, current.tail, &[], info, true)
            .await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let parent = streams.hard_delete(&mut g).await?;
    drop(g);
    if let Some(parent) = parent {
        streams.remove_released(&parent).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
