//! The server's configuration: one serde tree, loaded from defaults < TOML file < `SESSIOND_*`
//! environment < command-line flags, then validated once at start.
//!
//! Environment names map to keys with `__` between levels:
//! `SESSIOND_SESSIONS__IDLE_TTL_S=600` sets `[sessions] idle_ttl_s`. `SESSIOND_API_KEYS` is a
//! comma-separated list (read by the CLI layer).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use sessiond_sessions::SessionsConfig;

/// Which storage engine to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Embedded SQLite under `data_dir` (the default; acked = on disk).
    Sqlite,
    /// A Redis 7 server at `redis.url` (for several sessiond nodes).
    Redis,
    /// Process memory; nothing survives a restart (tests, demos).
    Memory,
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(EngineKind::Sqlite),
            "redis" => Ok(EngineKind::Redis),
            "memory" => Ok(EngineKind::Memory),
            other => Err(format!(
                "unknown engine `{other}`; choose sqlite, redis or memory"
            )),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Route sets that can be opened (served without an API key) with `open_routes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteSet {
    /// `/v1/sessions`, `/v1/users/...`.
    Sessions,
    /// `/v1/cache/...`.
    Cache,
    /// The seed-compatible surfaces under their prefixes.
    Compat,
    /// Durable Streams, `/v1/stream/...`.
    Streams,
    /// The session middleware, `/v1/middleware/...` (decide, forward-auth).
    Middleware,
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Loopback by default; a non-loopback address needs an API key.
    /// A host name is resolved at load (`crate::listen`).
    #[serde(with = "crate::listen")]
    pub listen: SocketAddr,
    /// Directory of the SQLite engine's files (created on first start).
    pub data_dir: PathBuf,
    /// Storage engine.
    pub engine: EngineKind,
    /// Accepted API keys (`Authorization: Bearer <key>`); several at once allow rotation.
    /// Empty = open development mode, allowed only on loopback.
    pub api_keys: Vec<String>,
    /// Route sets served without an API key even when keys are configured.
    pub open_routes: Vec<RouteSet>,
    /// Logging.
    pub log: LogConfig,
    /// HTTP server settings.
    pub http: HttpConfig,
    /// Sessions and cache.
    pub sessions: SessionsConfig,
    /// Seed-compatible route surfaces.
    pub compat: CompatConfig,
    /// SQLite engine.
    pub sqlite: SqliteConfig,
    /// Redis engine.
    pub redis: RedisConfig,
    /// Object runtime.
    pub runtime: RuntimeConfig,
    /// Durable Streams (limits, long-poll timeout, read page size).
    pub streams: sessiond_streams::StreamsConfig,
    /// Session middleware (seed A): cookies, signing keys, fingerprint, analytics, limits.
    pub middleware: sessiond_middleware::MiddlewareConfig,
    /// Realtime hub (seed C's user sessions over WebSocket).
    pub realtime: sessiond_realtime::RealtimeConfig,
    /// The admin console at `/admin` (off by default).
    pub admin: sessiond_admin::AdminConfig,
    /// Security event streams (`__security/...`).
    pub security: sessiond_sessions::security::SecurityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from("sessiond-data"),
            engine: EngineKind::Sqlite,
            api_keys: Vec::new(),
            open_routes: Vec::new(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            sessions: SessionsConfig::default(),
            compat: CompatConfig::default(),
            sqlite: SqliteConfig::default(),
            redis: RedisConfig::default(),
            runtime: RuntimeConfig::default(),
            streams: sessiond_streams::StreamsConfig::default(),
            middleware: sessiond_middleware::MiddlewareConfig::default(),
            realtime: sessiond_realtime::RealtimeConfig::default(),
            admin: sessiond_admin::AdminConfig::default(),
            security: sessiond_sessions::security::SecurityConfig::default(),
        }
    }
}

mod engines;
mod http;
pub use engines::{RedisConfig, RuntimeConfig, SqliteConfig};
pub use http::{HttpConfig, LogConfig};

/// One compat surface.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatSurface {
    /// Serve it.
    pub enabled: bool,
    /// Path prefix it is mounted under.
    pub prefix: String,
}

/// Seed-compatible route surfaces.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompatConfig {
    /// Seed B, the Session State Worker (`/create`, `/get/:id`, ..., `/cache/:key`).
    pub session_state: CompatSurface,
    /// Seed E, SessionStore + CalendarCache (`/create`, `/get?id=`, ..., `/calendars`).
    pub state: CompatSurface,
}

impl Default for CompatConfig {
    fn default() -> Self {
        CompatConfig {
            session_state: CompatSurface {
                enabled: true,
                prefix: "/compat/session-state".into(),
            },
            state: CompatSurface {
                enabled: true,
                prefix: "/compat/state".into(),
            },
        }
    }
}

/// Settings given on the command line; each overrides file and environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--engine`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineKind>,
    /// `--api-key` (repeatable) or `SESSIOND_API_KEYS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<Vec<String>>,
    /// `--redis-url`.
    #[serde(skip_serializing_if = "Option::is_none", rename = "redis")]
    pub redis_url: Option<RedisUrlOverride>,
    /// `--long-poll-timeout-ms` / `--max-read-chunk-bytes`, nested under `streams`.
    #[serde(skip_serializing_if = "StreamsOverride::is_empty")]
    pub streams: StreamsOverride,
}

/// Streams flags nested as `streams.*`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamsOverride {
    /// `--long-poll-timeout-ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_poll_timeout_ms: Option<u64>,
    /// `--max-read-chunk-bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_read_chunk_bytes: Option<usize>,
}

impl StreamsOverride {
    fn is_empty(&self) -> bool {
        self.long_poll_timeout_ms.is_none() && self.max_read_chunk_bytes.is_none()
    }
}

/// `--redis-url` nested as `redis.url`.
#[derive(Clone, Debug, Serialize)]
pub struct RedisUrlOverride {
    /// The URL.
    pub url: String,
}

/// Shortest bearer key (`api_keys`, `streams.keys`), in bytes.
pub const MIN_API_KEY_BYTES: usize = 16;
/// Shortest HMAC key (read-token secrets, grant keys, webhook keys, cookie signing keys).
pub const MIN_MAC_KEY_BYTES: usize = 32;

/// Refuses an empty or short secret; the message names it but never shows it.
fn check_secret(name: &str, value: &str, min: usize) -> anyhow::Result<()> {
    let len = value.trim().len();
    if len == 0 {
        anyhow::bail!("{name} is empty: remove it or give it at least {min} random bytes");
    }
    if len < min {
        anyhow::bail!("{name} is {len} bytes long: it needs at least {min} bytes");
    }
    Ok(())
}

impl Config {
    /// Loads defaults < `file` < `SESSIOND_*` env < `overrides`, then validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let config = Config::extract(
            figment
                .merge(Env::prefixed("SESSIOND_").split("__").ignore(&["api_keys"]))
                .merge(Serialized::defaults(overrides)),
        )?;
        // Cross-field checks name the key; the file is named here, once.
        config.validate().map_err(|e| match file {
            Some(path) => e.context(format!(
                "invalid configuration (from {}, SESSIOND_* variables and flags)",
                path.display()
            )),
            None => e.context("invalid configuration"),
        })?;
        Ok(config)
    }

    /// A configuration file's text over the defaults, validated, without the environment or
    /// flags: what [`Config::load`] does with a file (the config fuzz target's entry point).
    pub fn from_toml_str(text: &str) -> anyhow::Result<Config> {
        let config = Config::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )?;
        config.validate()?;
        Ok(config)
    }

    fn extract(figment: Figment) -> anyhow::Result<Config> {
        figment
            .extract()
            .map_err(|e| anyhow::anyhow!("{}", crate::config_error::describe(e)))
    }

    /// Open development mode: no credential of any kind (no `api_keys`, no `[[streams.keys]]`,
    /// no `streams.read_token_secrets`) *and* a loopback listener. Decided here, once; every
    /// capability is handed the answer (through [`Config::server_keys`]) and none computes
    /// its own.
    pub fn open_mode(&self) -> bool {
        self.full_keys().is_empty()
            && self.streams.keys.is_empty()
            && self.streams.read_token_secrets.is_empty()
            && self.listen.ip().is_loopback()
    }

    /// The session cookie names: `sessions.cookies`, else its old name
    /// `realtime.session_cookies`, else the default (`validate` refuses both set differently).
    pub fn session_cookies(&self) -> Vec<String> {
        match (&self.sessions.cookies, &self.realtime.session_cookies) {
            (None, Some(old)) => old.clone(),
            _ => self.sessions.cookie_names(),
        }
    }

    /// The server's keys — full and tenant-scoped — with the open-mode decision, the one value
    /// every capability authenticates with.
    pub fn server_keys(&self) -> sessiond_http::ApiKeys {
        let scoped = self.streams.keys.iter().map(|k| {
            let scope = sessiond_http::auth::KeyScope {
                prefixes: k.stream_prefixes.clone(),
                read_only: k.read_only,
            };
            (k.key.as_str(), scope)
        });
        sessiond_http::ApiKeys::new(self.full_keys())
            .with_scoped(scoped)
            .open_mode(self.open_mode())
    }

    /// The full-access keys: `api_keys`, and `admin.key` while the console is enabled.
    pub fn full_keys(&self) -> Vec<&str> {
        let admin = &self.admin;
        let admin = (admin.enabled && !admin.key.is_empty()).then_some(admin.key.as_str());
        self.api_keys
            .iter()
            .map(String::as_str)
            .chain(admin)
            .collect()
    }

    /// Cross-field checks; the message names the key to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_secrets()?;
        if !self.redis.cluster && !self.redis.urls.is_empty() {
            anyhow::bail!(
                "redis.urls lists cluster seed nodes: set redis.cluster = true, \
                 or use redis.url for a standalone server"
            );
        }
        if self.log.access_flush_ms > http::MAX_ACCESS_FLUSH_MS {
            anyhow::bail!(
                "log.access_flush_ms must be at most {} (10 s)",
                http::MAX_ACCESS_FLUSH_MS
            );
        }
        if self.redis.session_expiry_grace_s > engines::MAX_SESSION_EXPIRY_GRACE_S {
            anyhow::bail!(
                "redis.session_expiry_grace_s must be at most {} (one year)",
                engines::MAX_SESSION_EXPIRY_GRACE_S
            );
        }
        if !self.listen.ip().is_loopback()
            && self.full_keys().is_empty()
            && self.streams.keys.is_empty()
        {
            anyhow::bail!(
                "refusing to listen on {} without an API key: set api_keys (or --api-key / \
                 SESSIOND_API_KEYS), or listen on a loopback address",
                self.listen
            );
        }
        if self.admin.enabled && !self.listen.ip().is_loopback() && self.full_keys().is_empty() {
            anyhow::bail!(
                "admin.enabled on {} (not loopback) needs a key to log in with: set admin.key \
                 or api_keys, or disable the console",
                self.listen
            );
        }
        self.sessions.validate().map_err(anyhow::Error::msg)?;
        match (&self.sessions.cookies, &self.realtime.session_cookies) {
            (Some(new), Some(old)) if new != old => anyhow::bail!(
                "sessions.cookies = {new:?} and realtime.session_cookies = {old:?} differ: \
                 realtime.session_cookies is the old name of sessions.cookies; keep only \
                 sessions.cookies"
            ),
            (None, Some(old)) => {
                let alias = sessiond_sessions::SessionsConfig {
                    cookies: Some(old.clone()),
                    ..self.sessions.clone()
                };
                alias
                    .validate()
                    .map_err(|e| anyhow::anyhow!("realtime.session_cookies (alias): {e}"))?;
            }
            _ => {}
        }
        self.streams.validate().map_err(anyhow::Error::msg)?;
        if let Some(k) = self.streams.keys.iter().find(|k| {
            self.full_keys()
                .iter()
                .any(|full| full.trim() == k.key.trim())
        }) {
            anyhow::bail!(
                "streams.keys: a scoped key (prefixes {:?}) is also in api_keys; give it its own value",
                k.stream_prefixes
            );
        }
        self.middleware.validate().map_err(anyhow::Error::msg)?;
        self.validate_cluster_secrets()?;
        let analytics_stream = format!(
            "{}{}",
            sessiond_streams::protocol::STREAM_PREFIX,
            self.middleware.analytics.stream
        );
        if let Err(e) =
            sessiond_streams::headers::stream_name(&analytics_stream, self.streams.max_name_bytes)
        {
            anyhow::bail!(
                "middleware.analytics.stream is not a valid stream name: {}",
                e.api.message
            );
        }
        self.realtime.validate().map_err(anyhow::Error::msg)?;
        if self.runtime.eviction_interval_s == 0 {
            anyhow::bail!("runtime.eviction_interval_s must be > 0");
        }
        if self.runtime.alarm_poll_ms == Some(0) || self.runtime.alarm_claim_lease_ms < 100 {
            anyhow::bail!(
                "runtime.alarm_poll_ms must be > 0 and runtime.alarm_claim_lease_ms >= 100"
            );
        }
        if self.http.max_body_bytes == 0 {
            anyhow::bail!("http.max_body_bytes must be > 0");
        }
        self.http.validate()?;
        for (name, surface) in [
            ("session_state", &self.compat.session_state),
            ("state", &self.compat.state),
        ] {
            if surface.enabled
                && (!surface.prefix.starts_with('/')
                    || surface.prefix.len() < 2
                    || surface.prefix.ends_with('/'))
            {
                anyhow::bail!(
                    "compat.{name}.prefix must start with `/`, not end with `/`, and not be `/`"
                );
            }
        }
        if self.sqlite.max_batch == 0
            || self.sqlite.readers == 0
            || self.sqlite.max_queued_writes == 0
        {
            anyhow::bail!(
                "sqlite.max_batch, sqlite.readers and sqlite.max_queued_writes must be > 0"
            );
        }
        Ok(())
    }

    /// On a shared engine every node must verify what the others sign: a secret that would
    /// otherwise be made at random per process is refused, naming the key to set. (Only the
    /// middleware's cookie signing key is ever generated; realtime grant keys and stream
    /// read-token secrets are off until configured, and the webhook signing key of stream
    /// subscriptions is stored in the engine once for all nodes.)
    fn validate_cluster_secrets(&self) -> anyhow::Result<()> {
        if self.engine == EngineKind::Redis
            && self.middleware.enabled
            && self.middleware.signing_keys.is_empty()
        {
            anyhow::bail!(
                "middleware.signing_keys is empty, so each node would sign cookies with its own \
                 random key and the others would treat them as new clients: with engine = \
                 \"redis\" set the same middleware.signing_keys (32+ random bytes) on every \
                 node, or set middleware.enabled = false"
            );
        }
        Ok(())
    }

    /// Every key and secret is long enough to resist guessing: an empty one (a stray comma in
    /// `SESSIOND_API_KEYS`, `api_keys = [""]`) is never "no key", it is refused, as is a
    /// bearer key under [`MIN_API_KEY_BYTES`] or a MAC key under [`MIN_MAC_KEY_BYTES`] (an
    /// HMAC key shorter than its hash output can be searched offline from one signed value).
    fn validate_secrets(&self) -> anyhow::Result<()> {
        let bearer = self
            .api_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    format!("api_keys[{i}] (or --api-key / SESSIOND_API_KEYS)"),
                    k,
                )
            })
            .chain(
                self.streams
                    .keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (format!("streams.keys[{i}].key"), &k.key)),
            )
            .chain(
                (!self.admin.key.is_empty()).then(|| ("admin.key".to_string(), &self.admin.key)),
            );
        for (name, key) in bearer {
            check_secret(&name, key, MIN_API_KEY_BYTES)?;
        }
        let realtime = &self.realtime;
        let mac = [
            (
                "streams.read_token_secrets",
                &self.streams.read_token_secrets,
            ),
            ("realtime.grant_keys", &realtime.grant_keys),
            (
                "realtime.events.webhook_keys",
                &realtime.events.webhook_keys,
            ),
            ("middleware.signing_keys", &self.middleware.signing_keys),
        ];
        for (name, keys) in mac {
            for (i, key) in keys.iter().enumerate() {
                check_secret(&format!("{name}[{i}]"), key, MIN_MAC_KEY_BYTES)?;
            }
        }
        let fingerprint = &self.middleware.fingerprint.secret;
        if !fingerprint.is_empty() {
            check_secret(
                "middleware.fingerprint.secret",
                fingerprint,
                MIN_MAC_KEY_BYTES,
            )?;
        }
        Ok(())
    }

    /// The configuration as TOML with API keys and secrets redacted (for `check-config`).
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        shown.api_keys = shown
            .api_keys
            .iter()
            .map(|_| "<redacted>".to_string())
            .collect();
        if !shown.admin.key.is_empty() {
            shown.admin.key = "<redacted>".into();
        }
        for scoped in &mut shown.streams.keys {
            scoped.key = "<redacted>".into();
        }
        for secret in &mut shown.streams.read_token_secrets {
            *secret = "<redacted>".into();
        }
        for key in shown.middleware.signing_keys.iter_mut() {
            *key = "<redacted>".into();
        }
        if !shown.middleware.fingerprint.secret.is_empty() {
            shown.middleware.fingerprint.secret = "<redacted>".into();
        }
        for key in shown
            .realtime
            .grant_keys
            .iter_mut()
            .chain(shown.realtime.events.webhook_keys.iter_mut())
        {
            *key = "<redacted>".into();
        }
        if !shown.streams.cold.s3.secret_access_key.is_empty() {
            shown.streams.cold.s3.secret_access_key = "<redacted>".into();
        }
        Ok(toml::to_string_pretty(&shown)?)
    }
}
