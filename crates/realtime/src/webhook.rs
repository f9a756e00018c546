//! The webhook sink: POSTs each user event, HMAC-signed, with retries.
//!
//! `Sessiond-Signature: t=<unix s>,v1=<hex>[,v1=<hex>…]`, one `v1` per configured key over
//! `"<t>.<body>"`, so a receiver can rotate keys and reject replays by age (docs/realtime.md
//! §4). A 2xx ends the delivery; anything else is retried after `backoff·2ⁿ` until
//! `webhook_max_attempts`. Each attempt, the answer's body included, is bounded by
//! `webhook_timeout_ms`, and at most `webhook_max_response_bytes` of the body are read. The
//! target must pass the shared SSRF rules (`sessiond_http::webhook`) at start-up and at
//! every connection: public addresses only, unless `webhook_allowed_networks` lists them.

use std::time::Duration;

use sessiond_http::signing::{signature_header, Keys};
use sessiond_http::webhook::{exchange, Client, Url, WebhookError};

use crate::config::EventsConfig;
use crate::events::{EventSink, SinkError, UserEvent};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "sessiond-signature";

/// Delivers events to `webhook_url`.
pub struct WebhookSink {
    client: Client,
    url: Url,
    max_response: usize,
    keys: Vec<String>,
    attempts: u32,
    backoff: Duration,
    timeout: Duration,
}

/// The signature header value for `body` at unix second `t` (`t=<t>` alone without a key;
/// empty keys are skipped).
pub fn signature(keys: &[String], t: i64, body: &[u8]) -> String {
    match Keys::new(keys) {
        Some(keys) => signature_header(&keys, t, body),
        None => format!("t={t}"),
    }
}

impl WebhookSink {
    /// A sink for the configured webhook, or `None` when no URL is set.
    pub fn from_config(config: &EventsConfig) -> Option<WebhookSink> {
        if config.webhook_url.is_empty() {
            return None;
        }
        // The configuration was validated at start-up; a refusal here only logs.
        let (client, url) = match Self::client(config) {
            Ok(built) => built,
            Err(error) => {
                tracing::error!(%error, "realtime.events.webhook_url refused; no webhook events");
                return None;
            }
        };
        Some(WebhookSink {
            client,
            url,
            max_response: config.webhook_max_response_bytes,
            keys: config.webhook_keys.clone(),
            attempts: config.webhook_max_attempts.max(1),
            backoff: Duration::from_millis(config.webhook_backoff_ms),
            timeout: Duration::from_millis(config.webhook_timeout_ms),
        })
    }

    fn client(config: &EventsConfig) -> Result<(Client, Url), SinkError> {
        let policy = config.webhook_policy()?;
        let url = policy.validate(&config.webhook_url)?;
        let client = policy.client(Duration::from_millis(config.webhook_timeout_ms))?;
        Ok((client, url))
    }

    async fn try_once(&self, body: &[u8]) -> Result<(), WebhookError> {
        let t = sessiond_store::now_ms() / 1000;
        let request = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature(&self.keys, t, body))
            .body(body.to_vec());
        // At most `max_response` bytes of the answer are read (and dropped), within the
        // timeout: a receiver that streams an endless body costs neither memory nor a stuck
        // delivery.
        let answer = exchange(request, self.max_response, self.timeout).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]);
            Err(WebhookError::Status {
                status: answer.status,
                excerpt: format!(": {text}"),
            })
        }
    }
}

#[async_trait::async_trait]
impl EventSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn deliver(&self, event: &UserEvent) -> Result<(), SinkError> {
        let body = serde_json::to_vec(event).map_err(WebhookError::Encode)?;
        let mut attempt = 0;
        loop {
            let Err(e) = self.try_once(&body).await else {
                return Ok(());
            };
            metrics::counter!("sessiond_realtime_webhook_retries_total").increment(1);
            attempt += 1;
            if attempt >= self.attempts {
                let last = Box::new(e);
                let attempts = self.attempts;
                return Err(WebhookError::GaveUp { attempts, last }.into());
            }
            let exp = (attempt - 1).min(16);
            tokio::time::sleep(self.backoff.saturating_mul(1 << exp)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_targets_need_the_allow_list() {
        let mut config = EventsConfig {
            webhook_url: "http://127.0.0.1:9/hook".into(),
            webhook_keys: vec!["k".into()],
            ..EventsConfig::default()
        };
        assert!(WebhookSink::from_config(&config).is_none());
        config.webhook_url = "https://169.254.169.254/latest".into();
        assert!(WebhookSink::from_config(&config).is_none());
        config.webhook_url = "http://127.0.0.1:9/hook".into();
        config.webhook_allow_http = true;
        config.webhook_allowed_networks = vec!["127.0.0.0/8".into()];
        assert!(WebhookSink::from_config(&config).is_some());
        config.webhook_url = "https://hooks.example.com/x".into();
        config.webhook_allowed_networks.clear();
        assert!(WebhookSink::from_config(&config).is_some());
    }

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

    /// The header computed before the signing code moved to `sessiond_http::signing` (pinned
    /// from the old code): receivers verify exactly this layout.
    #[test]
    fn pinned_vector() {
        let keys = vec!["a".repeat(32), String::new(), "b".repeat(32)];
        assert_eq!(
            signature(&keys, 1_700_000_000, br#"{"type":"join"}"#),
            "t=1700000000,v1=dfdd193f762fd55821177645c63453e2ae1cd4d23aa37a5602ead3c4627dc58a,\
             v1=55ec8a48e9d0d2ede9f450931dbbdfa8b33e80c2b1e5de3de9451ab2a57fa44b"
        );
    }
}
