//! Read tokens bound to account sessions (`streams.read_tokens_bound_to_sessions`).
//!
//! Why: a read token is a JWT minted by the app's backend; on its own it lives until `exp`,
//! however the session it was minted for ends. When the operator says that the token's
//! `session_id` claim names a `/v1/sessions` id, a read is allowed only while that session
//! lives, and an open SSE or long-poll read made with the token ends when the session does —
//! the same "one ending closes everything" rule sockets follow. The capability does not know
//! sessions: the server hands it a [`SessionBinding`] (liveness and the ending announcements
//! the realtime hub also uses, which reach every node), and expiry, which nobody announces,
//! is found here by waiting for the session's own deadline and asking again.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::StreamExt as _;
use sessiond_store::{now_ms, Millis};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use crate::error::{StreamError, StreamResult};

/// What the streams capability needs to know about sessions.
#[async_trait]
pub trait SessionBinding: Send + Sync + 'static {
    /// When the live session `id` expires unless used (unix ms); `None` when it is not live
    /// (unknown, ended, rotated away). Must not slide the session.
    /// `Err` when that cannot be known now: the sessions capability's error, answered as it
    /// is (`sessiond_http::error`'s mapping).
    async fn live_until(&self, id: &str) -> Result<Option<Millis>, sessiond_http::ApiError>;

    /// Announcements of session ids that ended or were rotated away.
    fn endings(&self) -> Receiver<Arc<[String]>>;
}

/// The 401 of a read whose token's session is gone.
fn ended_error() -> StreamError {
    StreamError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the read token's session has ended",
    )
    .with("cache-control", "no-store")
}

/// Checks the session of a read token before the read; on success, a future that completes
/// when the session ends (subscribed before the check, so no ending slips between).
pub(crate) async fn check(
    binding: Arc<dyn SessionBinding>,
    session_id: &str,
) -> StreamResult<impl Future<Output = ()> + Send + 'static> {
    let endings = binding.endings();
    let until = match binding.live_until(session_id).await {
        Ok(Some(until)) => until,
        Ok(None) => return Err(ended_error()),
        Err(e) => return Err(e.into()),
    };
    Ok(ended(binding, session_id.to_string(), until, endings))
}

async fn ended(
    binding: Arc<dyn SessionBinding>,
    id: String,
    mut until: Millis,
    mut endings: Receiver<Arc<[String]>>,
) {
    loop {
        let wait = u64::try_from(until.saturating_sub(now_ms())).unwrap_or(0);
        let recheck = tokio::select! {
            got = endings.recv() => match got {
                Ok(ids) if ids.contains(&id) => return,
                Ok(_) => false,
                // Missed announcements may have named this session: ask.
                Err(RecvError::Lagged(_)) => true,
                // Nobody announces any more (shutting down): deadlines still hold.
                Err(RecvError::Closed) => {
                    endings = binding.endings();
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    true
                }
            },
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => true,
        };
        if recheck {
            match binding.live_until(&id).await {
                Ok(Some(later)) => until = later.max(now_ms() + 1),
                _ => return,
            }
        }
    }
}

/// Runs a read under its session: a long-poll still waiting when the session ends answers
/// 401; an SSE response's body ends there.
pub(crate) async fn bound_read(
    read: impl Future<Output = StreamResult<Response>>,
    ended: impl Future<Output = ()> + Send + 'static,
) -> StreamResult<Response> {
    let mut ended = Box::pin(ended);
    let response = tokio::select! {
        r = read => r?,
        _ = &mut ended => return Err(ended_error()),
    };
    let sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !sse {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = Body::from_stream(body.into_data_stream().take_until(ended));
    Ok(Response::from_parts(parts, body))
}
