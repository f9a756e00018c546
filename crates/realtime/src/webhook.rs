//! The webhook sink: POSTs each user event, HMAC-signed, with retries.
//!
//! `Sessiond-Signature: t=<unix s>,v1=<hex>[,v1=<hex>…]`, one `v1` per configured key over
//! `"<t>.<body>"`, so a receiver can rotate keys and reject replays by age (docs/realtime.md
//! §4). A 2xx ends the delivery; anything else is retried after `backoff·2ⁿ` until
//! `webhook_max_attempts`. Each attempt, the answer's body included, is bounded by
//! `webhook_timeout_ms`, and at most 64 KiB of the body is read.

use std::fmt::Write as _;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::EventsConfig;
use crate::events::{EventSink, UserEvent};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "sessiond-signature";

/// Most bytes of a webhook's answer that are read.
pub const RESPONSE_CAP: usize = 64 * 1024;

/// Delivers events to `webhook_url`.
pub struct WebhookSink {
    client: webhook_http::Client,
    url: String,
    keys: Vec<String>,
    attempts: u32,
    backoff: Duration,
    timeout: Duration,
}

/// The first [`RESPONSE_CAP`] bytes of `response`'s body, read for at most `within`.
async fn read_capped(mut response: webhook_http::Response, within: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    let _ = tokio::time::timeout(within, async {
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = RESPONSE_CAP - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= RESPONSE_CAP {
                break;
            }
        }
    })
    .await;
    body
}

/// The signature header value for `body` at unix second `t`.
pub fn signature(keys: &[String], t: i64, body: &[u8]) -> String {
    let mut value = format!("t={t}");
    for key in keys.iter().filter(|k| !k.is_empty()) {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
            continue;
        };
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        value.push_str(",v1=");
        for byte in mac.finalize().into_bytes() {
            let _ = write!(value, "{byte:02x}");
        }
    }
    value
}

impl WebhookSink {
    /// A sink for the configured webhook, or `None` when no URL is set.
    pub fn from_config(config: &EventsConfig) -> Option<WebhookSink> {
        if config.webhook_url.is_empty() {
            return None;
        }
        let client = webhook_http::Client::builder()
            .timeout(Duration::from_millis(config.webhook_timeout_ms))
            .redirect(webhook_http::redirect::Policy::none())
            .build()
            .ok()?;
        Some(WebhookSink {
            client,
            url: config.webhook_url.clone(),
            keys: config.webhook_keys.clone(),
            attempts: config.webhook_max_attempts.max(1),
            backoff: Duration::from_millis(config.webhook_backoff_ms),
            timeout: Duration::from_millis(config.webhook_timeout_ms),
        })
    }

    async fn try_once(&self, body: &[u8]) -> Result<(), String> {
        let t = sessiond_store::now_ms() / 1000;
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature(&self.keys, t, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read (and drop) at most RESPONSE_CAP bytes of the answer, within the timeout: a
        // receiver that streams an endless body costs neither memory nor a stuck delivery.
        let body = read_capped(response, self.timeout).await;
        if status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Err(format!("webhook answered {status}: {text}"))
        }
    }
}

#[async_trait::async_trait]
impl EventSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn deliver(&self, event: &UserEvent) -> Result<(), String> {
        let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                let exp = (attempt - 1).min(16);
                tokio::time::sleep(self.backoff.saturating_mul(1 << exp)).await;
            }
            match self.try_once(&body).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    metrics::counter!("sessiond_realtime_webhook_retries_total").increment(1);
                    last = e;
                }
            }
        }
        Err(format!("gave up after {} attempts: {last}", self.attempts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_signature_per_key() {
        let sig = signature(&["a".into(), "b".into()], 1700000000, b"{}");
        let parts: Vec<&str> = sig.split(',').collect();
        assert_eq!(parts[0], "t=1700000000");
        assert_eq!(parts.len(), 3);
        assert!(parts[1].starts_with("v1=") && parts[1].len() == 3 + 64);
        assert_ne!(parts[1], parts[2]);
        assert_eq!(sig, signature(&["a".into(), "b".into()], 1700000000, b"{}"));
    }
}
