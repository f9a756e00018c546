//! Getting a wake to a worker: a signed webhook POST, or wake events on the wake stream.
//!
//! The receiver is untrusted: the webhook client resolves names only through the policy of
//! `sessiond_http::webhook` (no proxy, no redirects), the whole exchange is bounded
//! by `webhook_timeout_ms`, and at most `webhook_max_response_bytes` of the answer are read
//! (a longer answer is a failed delivery, so a receiver cannot make the server buffer
//! without limit).
//!
//! A webhook is sent by a spawned task without holding the subscription's lock (a receiver
//! may call back before it answers). Its result is applied only if the wake is still the
//! current one: a synchronous `{"done": true}` acks the wake's snapshot and frees the
//! subscription; a failure schedules a retry with backoff; any other 2xx leaves the wake to
//! the callback or the lease. Pull-wake events are ordinary appends to an application stream
//! (JSON streams get one message per event), written under the subscription's lock so they
//! appear in generation order.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{json, Value};
use sessiond_http::webhook::WebhookError;
use sessiond_store::{now_ms, Millis, StreamChunk};

use super::error::{SubError, SubResult};
use super::model::{Subscription, Wake};
use super::Subscriptions;
use crate::error::StreamError;
use crate::service::stream;

/// Most wake events written for one wake (one per pending stream).
const MAX_EVENTS_PER_WAKE: usize = 16;

impl Subscriptions {
    /// Sends the webhook for wake `(generation, wake_id)` of `id` and applies the outcome.
    /// (Boxed: delivery can issue the next wake, which spawns the next delivery.)
    pub(crate) fn deliver(
        &self,
        id: String,
        generation: u64,
        wake_id: String,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let this = self.clone();
        Box::pin(async move {
            if let Err(e) = this.try_deliver(&id, generation, &wake_id).await {
                tracing::warn!(subscription = %id, error = ?e, "webhook delivery bookkeeping failed");
            }
        })
    }

    async fn try_deliver(&self, id: &str, generation: u64, wake_id: &str) -> SubResult<()> {
        let (url, body) = {
            let mut g = self.inner.objects.lock(id).await;
            let Some(sub) = self.load(&mut g).await? else {
                return Ok(());
            };
            let Some(wake) = current(sub, generation, wake_id) else {
                return Ok(());
            };
            let Some(url) = sub.config.webhook_url.clone() else {
                return Ok(());
            };
            let body = json!({
                "subscription_id": sub.id,
                "wake_id": wake.wake_id,
                "generation": generation,
                "streams": sub.wake_streams(&wake.snapshot),
                "callback_url": sub.callback_url(),
                "callback_token": wake.token,
            });
            (url, body)
        };
        let outcome = self.post(&url, &body).await;
        if let Err(reason) = &outcome {
            tracing::warn!(subscription = %id, %url, %reason, "webhook delivery failed");
        }
        self.retrying(|| self.settle(id, generation, wake_id, &outcome))
            .await
    }

    /// Applies a delivery's outcome if its wake is still the current one.
    async fn settle(
        &self,
        id: &str,
        generation: u64,
        wake_id: &str,
        outcome: &Result<Value, WebhookError>,
    ) -> SubResult<()> {
        let mut g = self.inner.objects.lock(id).await;
        let Some(sub) = self.load(&mut g).await? else {
            return Ok(());
        };
        let Some(wake) = current(sub, generation, wake_id).cloned() else {
            return Ok(());
        };
        let now = now_ms();
        let Ok(answer) = outcome else {
            return self.failed(&mut g, now).await;
        };
        let recovered = sub.retry.take().is_some();
        if answer.get("done").and_then(Value::as_bool) == Some(true) {
            for (path, tail) in &wake.snapshot {
                if sub.links.get(path).is_some_and(|l| *tail > l.acked) {
                    self.advance_link(sub, path, *tail).await?;
                }
            }
            self.finish(&mut g, now).await?;
        } else if recovered {
            self.save(&mut g).await?;
        }
        Ok(())
    }

    /// POSTs `body` signed; the receiver's JSON answer (`{}` if none) on a 2xx.
    async fn post(&self, url: &str, body: &Value) -> Result<Value, WebhookError> {
        let limits = &self.inner.config;
        let parsed = self.inner.webhooks.validate(url)?;
        let raw = serde_json::to_vec(body)?;
        let signature = self.inner.signer.signature_header(now_ms() / 1000, &raw);
        let request = self
            .inner
            .http
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-signature", signature)
            .body(raw);
        let max = limits.webhook_max_response_bytes;
        let bound = Duration::from_millis(limits.webhook_timeout_ms);
        let answer = sessiond_http::webhook::exchange(request, max, bound).await?;
        if !answer.status.is_success() {
            return Err(WebhookError::Status {
                status: answer.status,
                excerpt: String::new(),
            });
        }
        if answer.truncated {
            return Err(WebhookError::TooLong(max));
        }
        let bytes = answer.body;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Appends the wake events of a pull-wake subscription to its wake stream.
    pub(crate) async fn announce(
        &self,
        sub: &Subscription,
        generation: u64,
        wake: &Wake,
        now: Millis,
    ) -> SubResult<()> {
        let Some(path) = &sub.config.wake_stream else {
            return Err(SubError::bad_request(
                "pull-wake subscription without wake_stream",
            ));
        };
        let events: Vec<Value> = wake
            .snapshot
            .keys()
            .take(MAX_EVENTS_PER_WAKE)
            .map(|stream| {
                json!({
                    "type": "wake",
                    "subscription_id": sub.id,
                    "stream": stream,
                    "generation": generation,
                    "wake_id": wake.wake_id,
                    "ts": now,
                })
            })
            .collect();
        self.append_values(path, &events).await?;
        Ok(())
    }

    /// Appends JSON values to a stream as the server itself (one message each on JSON
    /// streams; newline-terminated text otherwise), again on fresh metadata when another node
    /// appended meanwhile.
    async fn append_values(&self, path: &str, values: &[Value]) -> Result<(), StreamError> {
        let streams = &self.inner.streams;
        streams.retry_stale(|| self.append_once(path, values)).await
    }

    async fn append_once(&self, path: &str, values: &[Value]) -> Result<(), StreamError> {
        let streams = &self.inner.streams;
        let now = now_ms();
        let mut g = streams.lock_live(path, now).await?;
        let Some(current) = stream(&g).cloned() else {
            return Err(StreamError::not_found());
        };
        if current.info.closed {
            return Err(StreamError::conflict("the wake stream is closed"));
        }
        let mut pieces = Vec::with_capacity(values.len());
        for v in values {
            let mut bytes = serde_json::to_vec(v)
                .map_err(|e| StreamError::bad_request(format!("wake event: {e}")))?;
            if !current.info.is_json() {
                bytes.push(b'\n');
            }
            pieces.push(bytes);
        }
        let mut pos = current.tail;
        let chunks: Vec<StreamChunk> = pieces
            .into_iter()
            .map(|data| {
                let c = StreamChunk { offset: pos, data };
                pos = c.end();
                c
            })
            .collect();
        let mut info = current.info.clone();
        info.last_access = now;
        streams
            .commit(&mut g, current.tail, &chunks, info, true)
            .await
    }
}

/// The wake if `(generation, wake_id)` is still current.
fn current<'a>(sub: &'a Subscription, generation: u64, wake_id: &str) -> Option<&'a Wake> {
    sub.wake
        .as_ref()
        .filter(|w| sub.generation == generation && w.wake_id == wake_id)
}
