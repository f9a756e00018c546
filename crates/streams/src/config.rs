//! Limits and timings of the streams capability (the `[streams]` section of sessiond's config).
//!
//! Every limit answers with a clear 4xx (or 503 with `Retry-After` for connection caps) rather
//! than degrading silently: a client that hits one learns which knob to ask for.
//!
//! Every subsection of `[streams]` is defined here too (cold tier, subscriptions, retention
//! defaults, compaction), even those of parts that sit high in the crate: settings are plain
//! data, and keeping them at the bottom lets the service hold one `StreamsConfig` without
//! importing the operations that read it.

mod cold;
mod subscriptions;

use serde::{Deserialize, Serialize};
use sessiond_http::ConfigError;

pub use cold::{ColdBackend, ColdConfig, S3Settings};
pub use subscriptions::SubscriptionsConfig;

/// Streams settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// How long a long-poll read waits at the tail before answering 204 (milliseconds). The
    /// conformance suite runs with 500.
    pub long_poll_timeout_ms: u64,
    /// Largest body of one catch-up page (bytes). JSON pages are cut on value boundaries, so
    /// a single larger value is still sent whole.
    pub max_read_chunk_bytes: usize,
    /// Largest append or create body (bytes); larger is a 413.
    pub max_append_bytes: usize,
    /// JSON streams: deepest nesting of arrays and objects inside one message; deeper is a 400.
    pub max_json_depth: usize,
    /// JSON streams: most messages (top-level array elements) in one append or create body;
    /// more is a 413.
    pub max_messages_per_append: usize,
    /// JSON streams: bytes each message of a body counts against `max_append_bytes` on top of
    /// its own, so one request cannot turn a body into millions of tiny messages.
    pub json_message_overhead_bytes: usize,
    /// Longest stream name (bytes of the path after `/v1/stream/`); longer is a 400.
    pub max_name_bytes: usize,
    /// Longest `Producer-Id` (bytes); longer is a 400.
    pub max_producer_id_bytes: usize,
    /// Longest `Stream-Seq` (bytes); longer is a 400.
    pub max_stream_seq_bytes: usize,
    /// Most idempotent producers remembered per stream; a new producer beyond it evicts the
    /// least recently used one, which loses its deduplication (see docs/api.md). 0 = no limit.
    pub max_producers_per_stream: usize,
    /// Most concurrently open SSE connections; beyond it new ones get 503 + `Retry-After`.
    pub max_sse_connections: usize,
    /// Bytes of a stream's latest appends kept in memory while readers wait at its tail, so
    /// an append fanned out to many SSE / long-poll readers is read from the store once, not
    /// once per reader. Per stream with waiting readers; an append larger than this is not
    /// kept. 0 = off.
    pub fanout_cache_bytes: usize,
    /// Most concurrently waiting long-poll requests; beyond it new ones get 503.
    pub max_long_polls: usize,
    /// An SSE connection is closed after this long (seconds) so CDNs can collapse
    /// reconnections; clients resume from the last offset.
    pub sse_reconnect_s: u64,
    /// How often the sweeper looks for expired streams (seconds).
    pub sweep_interval_s: u64,
    /// Several nodes on one engine: how many times an append is decided again after its
    /// commit lost a race with another node, before answering 503 + `Retry-After`.
    pub max_commit_attempts: u32,
    /// Between those attempts a writer waits a random time (full jitter) up to this many
    /// milliseconds times 2^(attempt - 2), at most 64 times this, so writers racing on one
    /// stream from several nodes spread out instead of colliding again. 0 = no wait.
    pub commit_retry_backoff_ms: u64,
    /// Subscriptions: allow `http://` webhooks to loopback targets (development and the
    /// conformance suite). Off by default: webhooks must be `https://` to public addresses.
    pub allow_insecure_webhooks: bool,
    /// Subscriptions: networks (CIDRs, e.g. `10.1.0.0/16`) webhooks may reach although they
    /// are not public (private, loopback, link-local). Empty by default: public only.
    pub webhook_allowed_networks: Vec<String>,
    /// Most streams under one prefix (see `quota_prefix_segments`); beyond it a create is a
    /// 429 `stream_quota_exceeded`. 0 = no limit.
    pub max_streams_per_prefix: usize,
    /// How many leading path segments form the quota prefix (`tenant/...` with 1).
    pub quota_prefix_segments: usize,
    /// A JSON stream that receives a metrics snapshot every `metrics_interval_s` (off when unset).
    pub metrics_stream: Option<String>,
    /// Seconds between metrics snapshots.
    pub metrics_interval_s: u64,
    /// Cold segments in object storage (`[streams.cold]`).
    pub cold: ColdConfig,
    /// API keys limited to stream path prefixes (`[[streams.keys]]`), for tenants.
    pub keys: Vec<ScopedKeyConfig>,
    /// HS256 secrets of read tokens (GET/HEAD without an API key); any one verifies, so they
    /// rotate. Empty = read tokens are not accepted.
    pub read_token_secrets: Vec<String>,
    /// Longest read token accepted (bytes); longer is a 401.
    pub max_read_token_bytes: usize,
    /// The read token's `session_id` claim names a `/v1/sessions` session: a read with the
    /// token of an unknown or ended session is a 401, and open SSE and long-poll reads made
    /// with it end when the session ends (or its id is rotated away).
    pub read_tokens_bound_to_sessions: bool,
    /// Limits of the `__ds` subscriptions (`[streams.subscriptions]`).
    pub subscriptions: SubscriptionsConfig,
    /// The `aud` claim every read token must carry (a string, or an array containing it), so
    /// a token minted with a shared secret for another service is refused.
    pub read_token_audience: String,
    /// Largest `limit` of one `GET /v1/streams` page; larger is a 400. A page also examines at
    /// most `limit` + this many names (hidden or deleted ones are skipped).
    pub max_list_limit: usize,
    /// Most hot chunks one retention trim transaction deletes; a long trim is many such
    /// transactions, so appends to the stream never wait behind one big delete.
    pub trim_batch_chunks: usize,
    /// Retention of streams created without their own, by path prefix (the longest match).
    pub retention: Vec<RetentionDefault>,
    /// Resolution of age-based retention: a stream records at most one append time mark per
    /// this many seconds, and an age cut drops data up to this much later than exact.
    pub retention_mark_interval_s: u64,
    /// Streams the sweeper examines for retention per pass (it resumes where it stopped).
    pub retention_sweep_batch: usize,
    /// Keyed compaction of streams created with `Stream-Compaction: key`.
    pub compaction: CompactionConfig,
}

/// One `[[streams.keys]]` entry: a key that may only act on streams under its prefixes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedKeyConfig {
    /// The bearer key.
    pub key: String,
    /// Stream path prefixes, relative to `/v1/stream/`, matched on `/` segment boundaries:
    /// `tenant-a` and `tenant-a/` both mean the subtree `tenant-a/…` (not `tenant-ab/…`).
    pub stream_prefixes: Vec<String>,
    /// Only GET and HEAD.
    #[serde(default)]
    pub read_only: bool,
}

/// One `[[streams.retention]]` entry: the policy of streams under `prefix` that were created
/// without their own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDefault {
    /// A plain string prefix of the stream path (after `/v1/stream/`); `""` matches all.
    pub prefix: String,
    /// As `Stream-Retention-Max-Age`.
    #[serde(default)]
    pub max_age_s: Option<u64>,
    /// As `Stream-Retention-Max-Bytes`.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// `[streams.compaction]`: limits and timings of keyed compaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// The fields that key an event (dotted paths into the JSON message), for streams created
    /// from now on.
    pub key: Vec<String>,
    /// The sweeper compacts a stream once this many bytes were appended since its last
    /// compaction point.
    pub trigger_bytes: u64,
    /// A `delete` that is its key's latest event is kept this long, so readers that are behind
    /// still see it; then the key disappears from the compacted range.
    pub tombstone_grace_s: u64,
    /// Events carrying `headers.txid` are kept at least this long (StreamDB's `awaitTxId`).
    pub min_age_s: u64,
    /// Most chunks one compaction transaction drops (appends never wait behind a long one).
    pub batch_chunks: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            key: vec!["type".into(), "key".into()],
            trigger_bytes: 4 * 1024 * 1024,
            tombstone_grace_s: 86_400,
            min_age_s: 300,
            batch_chunks: 256,
        }
    }
}

impl CompactionConfig {
    /// Checks the values; the message names the key to fix.
    pub fn validate(&self) -> Result<(), sessiond_http::ConfigError> {
        if self.key.is_empty() || self.key.iter().any(|k| k.is_empty()) {
            return Err("streams.compaction.key must list at least one non-empty field".into());
        }
        if self.trigger_bytes == 0 || self.batch_chunks == 0 {
            return Err("streams.compaction.trigger_bytes and batch_chunks must be > 0".into());
        }
        Ok(())
    }
}

/// Shortest read-token secret (bytes): HS256 keys shorter than the hash output are weak.
pub const MIN_READ_TOKEN_SECRET_BYTES: usize = 32;

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            long_poll_timeout_ms: 20_000,
            max_read_chunk_bytes: 4 * 1024 * 1024,
            max_append_bytes: 16 * 1024 * 1024,
            max_json_depth: 128,
            max_messages_per_append: 100_000,
            json_message_overhead_bytes: 16,
            max_name_bytes: 1024,
            max_producer_id_bytes: 256,
            max_stream_seq_bytes: 256,
            max_producers_per_stream: 1000,
            max_sse_connections: 10_000,
            fanout_cache_bytes: 64 * 1024,
            max_long_polls: 10_000,
            sse_reconnect_s: 60,
            sweep_interval_s: 30,
            max_commit_attempts: 16,
            commit_retry_backoff_ms: 2,
            allow_insecure_webhooks: false,
            webhook_allowed_networks: Vec::new(),
            max_streams_per_prefix: 0,
            quota_prefix_segments: 1,
            metrics_stream: None,
            metrics_interval_s: 10,
            cold: ColdConfig::default(),
            keys: Vec::new(),
            read_token_secrets: Vec::new(),
            max_read_token_bytes: 4096,
            read_tokens_bound_to_sessions: false,
            subscriptions: Default::default(),
            read_token_audience: "sessiond".into(),
            max_list_limit: 1000,
            trim_batch_chunks: 1000,
            retention: Vec::new(),
            retention_mark_interval_s: 60,
            retention_sweep_batch: 256,
            compaction: Default::default(),
        }
    }
}

impl StreamsConfig {
    /// Where subscription webhooks may go: public `https://` targets, the allow-listed
    /// networks, and with `allow_insecure_webhooks` also `http://` and loopback.
    pub fn webhook_policy(&self) -> Result<sessiond_http::webhook::WebhookPolicy, ConfigError> {
        let policy =
            sessiond_http::webhook::WebhookPolicy::new(false, &self.webhook_allowed_networks)?;
        Ok(match self.allow_insecure_webhooks {
            true => policy.with_loopback(),
            false => policy,
        })
    }

    /// Checks the values; the message names the key to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.webhook_policy()
            .map_err(|e| e.context("streams.webhook_allowed_networks"))?;
        if self.trim_batch_chunks == 0 {
            return Err("streams.trim_batch_chunks must be > 0".into());
        }
        self.compaction.validate()?;
        if self.retention_sweep_batch == 0 {
            return Err("streams.retention_sweep_batch must be > 0".into());
        }
        if let Some(d) = self.retention.iter().find(|d| {
            d.max_age_s == Some(0)
                || d.max_bytes == Some(0)
                || (d.max_age_s.is_none() && d.max_bytes.is_none())
        }) {
            return Err(format!(
                "streams.retention (prefix {:?}): set max_age_s and/or max_bytes, each > 0",
                d.prefix
            )
            .into());
        }
        if self.long_poll_timeout_ms == 0 {
            return Err("streams.long_poll_timeout_ms must be > 0".into());
        }
        if self.max_commit_attempts == 0 {
            return Err("streams.max_commit_attempts must be > 0".into());
        }
        if self.max_read_chunk_bytes == 0 || self.max_append_bytes == 0 {
            return Err(
                "streams.max_read_chunk_bytes and streams.max_append_bytes must be > 0".into(),
            );
        }
        if self.max_producer_id_bytes == 0 || self.max_stream_seq_bytes == 0 {
            return Err(
                "streams.max_producer_id_bytes and streams.max_stream_seq_bytes must be > 0".into(),
            );
        }
        if self.max_json_depth == 0 || self.max_messages_per_append == 0 {
            return Err(
                "streams.max_json_depth and streams.max_messages_per_append must be > 0".into(),
            );
        }
        if self.max_name_bytes == 0 || self.sse_reconnect_s == 0 || self.sweep_interval_s == 0 {
            return Err(
                "streams.max_name_bytes, streams.sse_reconnect_s and streams.sweep_interval_s must be > 0"
                    .into(),
            );
        }
        if let Some(name) = &self.metrics_stream {
            let path = format!("{}{name}", crate::protocol::STREAM_PREFIX);
            crate::headers::stream_name(&path, self.max_name_bytes).map_err(|e| {
                format!(
                    "streams.metrics_stream `{name}` is not a valid stream name: {}",
                    e.api.message
                )
            })?;
        }
        if self.max_list_limit == 0 {
            return Err("streams.max_list_limit must be > 0".into());
        }
        if self.quota_prefix_segments == 0 || self.metrics_interval_s == 0 {
            return Err(
                "streams.quota_prefix_segments and streams.metrics_interval_s must be > 0".into(),
            );
        }
        self.validate_auth()?;
        self.subscriptions.validate()?;
        self.cold.validate()
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, entry) in self.keys.iter().enumerate() {
            if entry.key.trim().is_empty() || !seen.insert(entry.key.trim()) {
                return Err(format!("streams.keys[{i}].key is empty or repeated").into());
            }
            if entry.stream_prefixes.is_empty() {
                return Err(format!("streams.keys[{i}].stream_prefixes is empty").into());
            }
            for prefix in &entry.stream_prefixes {
                if prefix.is_empty() || prefix.starts_with('/') || prefix.starts_with("__ds") {
                    return Err(format!(
                        "streams.keys[{i}].stream_prefixes: `{prefix}` must be non-empty, \
                         relative to /v1/stream/ (no leading `/`) and not under __ds"
                    )
                    .into());
                }
            }
        }
        if self
            .read_token_secrets
            .iter()
            .any(|s| s.len() < MIN_READ_TOKEN_SECRET_BYTES)
        {
            return Err(format!(
                "streams.read_token_secrets: every secret needs at least \
                 {MIN_READ_TOKEN_SECRET_BYTES} bytes"
            )
            .into());
        }
        if self.max_read_token_bytes == 0 {
            return Err("streams.max_read_token_bytes must be > 0".into());
        }
        if self.read_token_audience.trim().is_empty() {
            return Err("streams.read_token_audience must not be empty".into());
        }
        Ok(())
    }
}
