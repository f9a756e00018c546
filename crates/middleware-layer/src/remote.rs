//! The remote backend: `POST /v1/middleware/decide` on a sessiond, with an API key.
//!
//! One `reqwest::Client` per backend, shared by every clone of the layer, so requests reuse
//! its pooled keep-alive connections (a connection per decision would cost more than the
//! decision). Each call has a deadline ([`RemoteBackend::timeout`]); past it the request goes
//! on with the fallback context rather than holding the user's page.
//!
//! Answers: 200 is the decision; 429 is the server's per-client rate refusal, passed on; any
//! other status, a transport error or an unreadable body makes the backend
//! [`Outcome::Unavailable`].

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, Url};
use sessiond_middleware::config::LimitsConfig;
use sessiond_middleware::{Decision, DecisionInput, Refusal};

use crate::backend::{DecisionBackend, Outcome};

/// Path of the decide endpoint under the server's base URL.
const DECIDE_PATH: &str = "/v1/middleware/decide";
/// Default deadline of one decision.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the base URL given to [`RemoteBackend::new`] cannot be used.
#[derive(Clone, Debug, thiserror::Error)]
#[error("sessiond URL {base:?} is unusable: {reason}")]
pub struct UnusableUrl {
    base: String,
    reason: String,
}

/// A sessiond reached over HTTP.
#[derive(Clone, Debug)]
pub struct RemoteBackend {
    client: reqwest::Client,
    /// The decide endpoint, or why the base URL was unusable (then every call falls back).
    endpoint: Result<Url, UnusableUrl>,
    api_key: Option<String>,
    timeout: Duration,
    max_field_bytes: usize,
}

impl RemoteBackend {
    /// The sessiond at `base_url` (e.g. `http://127.0.0.1:7700`), authenticated with
    /// `api_key` (empty = no `Authorization`, for a development server without keys).
    ///
    /// An unusable URL is logged here and makes every decision a fallback: the app keeps
    /// serving.
    pub fn new(base_url: &str, api_key: &str) -> Self {
        let endpoint = Url::parse(base_url)
            .and_then(|base| base.join(DECIDE_PATH))
            .map_err(|e| UnusableUrl {
                base: base_url.to_owned(),
                reason: e.to_string(),
            });
        if let Err(e) = &endpoint {
            tracing::error!("{e}; every session decision will be a fallback");
        }
        RemoteBackend {
            client: reqwest::Client::new(),
            endpoint,
            api_key: (!api_key.is_empty()).then(|| api_key.to_string()),
            timeout: DEFAULT_TIMEOUT,
            max_field_bytes: LimitsConfig::default().max_field_bytes,
        }
    }

    /// Deadline of one decision, connection included (default 500 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses the app's own client (and its connection pool, proxy and TLS settings).
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// The server's `middleware.limits.max_field_bytes`, when it is not the default (fields
    /// are cut to it before sending; a longer one would be refused with 400).
    pub fn max_field_bytes(mut self, max: usize) -> Self {
        self.max_field_bytes = max;
        self
    }
}

#[async_trait]
impl DecisionBackend for RemoteBackend {
    async fn decide(&self, input: DecisionInput) -> Outcome {
        let endpoint = match &self.endpoint {
            Ok(url) => url.clone(),
            Err(e) => return Outcome::Unavailable(e.to_string()),
        };
        let mut request = self
            .client
            .post(endpoint)
            .timeout(self.timeout)
            .json(&input);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Outcome::Unavailable(format!("sessiond unreachable: {e}")),
        };
        match response.status() {
            StatusCode::OK => match response.json::<Decision>().await {
                Ok(decision) => Outcome::Decided(Box::new(decision)),
                Err(e) => Outcome::Unavailable(format!("sessiond answer unreadable: {e}")),
            },
            StatusCode::TOO_MANY_REQUESTS => Outcome::Refused(Refusal::RateLimited),
            status => {
                let body = response.text().await.unwrap_or_default();
                let body: String = body.chars().take(200).collect();
                Outcome::Unavailable(format!("sessiond answered {status}: {body}"))
            }
        }
    }

    fn max_field_bytes(&self) -> usize {
        self.max_field_bytes
    }
}
