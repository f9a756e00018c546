//! The worker side (PROTOCOL.md §7): webhook callbacks, pull-wake claim, ack and release.
//!
//! Callback, ack and release authenticate with the wake's own bearer token (handed out in the
//! webhook body or the claim answer), not with an API key, so they are served outside the
//! API-key guard; each must also name the current generation and wake id. Claim is a service
//! call (API key when keys are configured). A valid ack without `done` is a heartbeat that
//! extends the lease; with `done` it frees the subscription and wakes again if work remains
//! (`next_wake`).

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sessiond_store::{now_ms, Millis};

use super::control::check_id;
use super::error::{SubError, SubResult};
use super::model::{AckBody, ClaimBody, Delivery, Wake};
use super::Subscriptions;

fn bearer(headers: &HeaderMap) -> SubResult<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(SubError::unauthorized)
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> SubResult<T> {
    super::error::parse_body(body)
}

impl Subscriptions {
    /// `POST …/callback` (webhook) and `POST …/ack` (pull-wake): same rules.
    pub async fn ack(&self, id: &str, headers: &HeaderMap, body: Bytes) -> SubResult<Response> {
        check_id(id)?;
        let token = bearer(headers)?;
        let body: AckBody = parse(&body)?;
        let next_wake = self.retrying(|| self.ack_once(id, &token, &body)).await?;
        Ok(Json(json!({ "ok": true, "next_wake": next_wake })).into_response())
    }

    async fn ack_once(&self, id: &str, token: &str, body: &AckBody) -> SubResult<bool> {
        let now = now_ms();
        let mut g = self.inner.objects.lock(id).await;
        let sub = self.load(&mut g).await?.ok_or_else(SubError::fenced)?;
        Self::check_fence(sub, token, body.generation, &body.wake_id, now)?;
        self.apply_acks(sub, &body.acks).await?;
        if body.done {
            return self.finish(&mut g, now).await;
        }
        let lease = sub.config.lease_ttl_ms as Millis;
        if let Some(wake) = sub.wake.as_mut() {
            wake.lease_until = now + lease;
        }
        self.save(&mut g).await?;
        Ok(false)
    }

    /// `POST …/release`: gives the wake back without acking.
    pub async fn release(&self, id: &str, headers: &HeaderMap, body: Bytes) -> SubResult<Response> {
        check_id(id)?;
        let token = bearer(headers)?;
        let body: AckBody = parse(&body)?;
        self.retrying(|| async {
            let now = now_ms();
            let mut g = self.inner.objects.lock(id).await;
            let sub = self.load(&mut g).await?.ok_or_else(SubError::fenced)?;
            Self::check_fence(sub, &token, body.generation, &body.wake_id, now)?;
            self.finish(&mut g, now).await
        })
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// `POST …/claim`: takes the lease of a pull-wake subscription.
    pub async fn claim(&self, id: &str, body: Bytes) -> SubResult<Response> {
        check_id(id)?;
        let body: ClaimBody = parse(&body)?;
        if body.worker.is_empty() {
            return Err(SubError::bad_request("worker is required"));
        }
        let answer = self.retrying(|| self.claim_once(id, &body)).await?;
        Ok(Json(answer).into_response())
    }

    async fn claim_once(&self, id: &str, body: &ClaimBody) -> SubResult<serde_json::Value> {
        let now = now_ms();
        let mut g = self.inner.objects.lock(id).await;
        let sub = self
            .load(&mut g)
            .await?
            .ok_or_else(SubError::not_found)?
            .clone();
        if sub.config.delivery != Delivery::PullWake {
            return Err(SubError::bad_request(
                "claim is for pull-wake subscriptions",
            ));
        }
        if let Some(wake) = &sub.wake {
            if let Some(holder) = &wake.holder {
                if wake.lease_until > now {
                    return Err(SubError::new(
                        StatusCode::CONFLICT,
                        "ALREADY_CLAIMED",
                        "another worker holds the lease",
                    )
                    .with("current_holder", holder.clone())
                    .with("generation", sub.generation));
                }
            }
        }
        let snapshot = self.pending(&sub).await;
        let lease_until = now + sub.config.lease_ttl_ms as Millis;
        // An announced, unclaimed wake is taken as is; otherwise (none, or its lease lapsed)
        // the claim starts a new generation, fencing whoever held the old one.
        let reuse = sub
            .wake
            .as_ref()
            .filter(|w| w.holder.is_none() && w.lease_until > now)
            .map(|w| w.wake_id.clone());
        let mut updated = sub;
        let wake_id = match reuse {
            Some(wake_id) => wake_id,
            None => {
                updated.generation += 1;
                format!("w_{}", sessiond_http::ids::random_id())
            }
        };
        let token = sessiond_http::ids::random_id();
        updated.wake = Some(Wake {
            wake_id: wake_id.clone(),
            token: Some(token.clone()),
            holder: Some(body.worker.clone()),
            snapshot: snapshot.clone(),
            lease_until,
        });
        let streams = updated.wake_streams(&snapshot);
        let generation = updated.generation;
        let lease_ttl_ms = updated.config.lease_ttl_ms;
        g.set(updated);
        self.save(&mut g).await?;
        Ok(json!({
            "wake_id": wake_id,
            "generation": generation,
            "token": token,
            "streams": streams,
            "lease_ttl_ms": lease_ttl_ms,
        }))
    }
}
