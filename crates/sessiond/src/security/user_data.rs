//! The security events' part of a user's export and erasure (issue 19 §5).
//!
//! Export: the user's own stream, every event still retained. Erasure: the user's stream,
//! their `user_ref` secret and their known devices go; the global stream gets `user.erased`
//! with a random erasure id, and the `user_ref`s it already holds point at nobody once the
//! secret is gone. Queued events are relayed first, so none lands after the erasure and
//! re-creates the stream (one queued by a session change racing the erasure may; the
//! erasure route ends the user's sessions first).

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use sessiond_http::user_data::UserDataSource;
use sessiond_http::ApiError;
use sessiond_sessions::security::{user_stream, SecurityEvents};
use sessiond_store::{Durability, Outbox};
use std::sync::Arc;

use super::Relay;

/// Largest response page the export reads at once.
const PAGE_LIMIT: usize = 64 * 1024 * 1024;

/// The security events as a [`UserDataSource`].
#[derive(Clone)]
pub struct SecurityUserData {
    relay: Relay,
    events: SecurityEvents,
    outbox: Arc<dyn Outbox>,
}

impl SecurityUserData {
    /// The source over the relay's streams.
    pub fn new(relay: Relay, events: SecurityEvents, outbox: Arc<dyn Outbox>) -> Self {
        SecurityUserData {
            relay,
            events,
            outbox,
        }
    }

    /// Every event of the user's stream, oldest first (empty when it has none).
    async fn read_all(&self, name: &str) -> Result<Vec<Value>, ApiError> {
        let streams = self.relay.streams();
        let mut events = Vec::new();
        let mut offset = "-1".to_string();
        loop {
            let query = format!("offset={offset}");
            let response =
                match sessiond_streams::read::read(streams, name, &HeaderMap::new(), Some(&query))
                    .await
                {
                    Ok(r) => r,
                    Err(e) if e.api.status == StatusCode::NOT_FOUND => return Ok(events),
                    Err(e) => return Err(*e.api),
                };
            let headers = response.headers().clone();
            let body = axum::body::to_bytes(response.into_body(), PAGE_LIMIT)
                .await
                .map_err(ApiError::internal)?;
            if let Ok(Value::Array(page)) = serde_json::from_slice::<Value>(&body) {
                events.extend(page);
            }
            let next = header(&headers, sessiond_streams::protocol::NEXT_OFFSET);
            let done = headers.contains_key(sessiond_streams::protocol::UP_TO_DATE);
            match next {
                Some(next) if !done && next != offset => offset = next,
                _ => return Ok(events),
            }
        }
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_string)
}

#[async_trait]
impl UserDataSource for SecurityUserData {
    fn name(&self) -> &'static str {
        "security_events"
    }

    async fn export(&self, user_id: &str) -> Result<Value, ApiError> {
        self.relay.flush().await?;
        Ok(Value::Array(self.read_all(&user_stream(user_id)).await?))
    }

    async fn erase(&self, user_id: &str) -> Result<(), ApiError> {
        self.relay.flush().await?;
        let name = user_stream(user_id);
        match sessiond_streams::delete::delete(self.relay.streams(), &name).await {
            Ok(_) => {}
            Err(e) if e.api.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(*e.api),
        }
        self.relay.forget(&name);
        self.relay
            .secrets()
            .forget(user_id)
            .await
            .map_err(ApiError::internal)?;
        self.events
            .forget_devices(user_id)
            .await
            .map_err(ApiError::internal)?;
        let erasure_id = sessiond_http::ids::random_id();
        self.outbox
            .outbox_push(vec![self.events.erased(&erasure_id)], Durability::Confirmed)
            .await
            .map_err(ApiError::internal)?;
        self.events.notify();
        metrics::counter!("sessiond_security_erasures_total").increment(1);
        Ok(())
    }
}
