//! The engine sections (`[sqlite]`, `[redis]`) and the object runtime's (`[runtime]`).

use super::*;

/// SQLite engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// Most writes committed in one transaction (one fsync).
    pub max_batch: usize,
    /// Read connections (reads never wait for the writer).
    pub readers: usize,
    /// Most writes queued for the writer at once; beyond it requests wait (backpressure).
    pub max_queued_writes: usize,
    /// Most streams whose row id and tail the writer keeps in memory (0: none).
    pub stream_tails: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            max_batch: 1024,
            readers: 4,
            max_queued_writes: 65_536,
            stream_tails: 100_000,
        }
    }
}

/// Largest `redis.session_expiry_grace_s`: one year (a native TTL far beyond any session's
/// life only keeps forgotten sessions around).
pub const MAX_SESSION_EXPIRY_GRACE_S: u64 = 365 * 86_400;

/// Redis engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URL, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Prefix of every key sessiond writes (several deployments can share a server).
    pub key_prefix: String,
    /// Connect to a Redis Cluster (through `urls`, or `url` when `urls` is empty) instead of
    /// a standalone server.
    pub cluster: bool,
    /// Seed nodes of the cluster (any of its nodes; the client discovers the rest). Only
    /// with `cluster = true`.
    pub urls: Vec<String>,
    /// How long a session hash stays in Redis past its deadline (seconds) before Redis drops
    /// it by itself. The session sweep normally ends it at the deadline with its
    /// `session.expired` event; this TTL only catches sessions no node swept in that time
    /// (every node down), which then end without an event. 0: Redis drops sessions at their
    /// deadline, before any sweep, so Redis records no `session.expired`.
    pub session_expiry_grace_s: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "sessiond".into(),
            cluster: false,
            urls: Vec::new(),
            session_expiry_grace_s: 86_400,
        }
    }
}

impl RedisConfig {
    /// The cluster's seed URLs: `urls`, or `url` alone.
    pub fn seeds(&self) -> Vec<String> {
        if self.urls.is_empty() {
            vec![self.url.clone()]
        } else {
            self.urls.clone()
        }
    }
}

/// Object runtime.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// In-memory object state is dropped after this long unused (seconds).
    pub idle_evict_s: u64,
    /// How often the idle-eviction sweep runs (seconds).
    pub eviction_interval_s: u64,
    /// Longest the alarm scheduler sleeps between two reads of the store's due alarms (ms).
    /// On a shared engine this is how late an alarm set through a node that died can fire on
    /// another one. Unset: 1000 on Redis (several nodes), 30000 on SQLite and memory (one
    /// process: its own wake-ups cover every alarm it sets).
    pub alarm_poll_ms: Option<u64>,
    /// How far a firing alarm is claimed into the future (ms), renewed every third of it while
    /// its handler runs: if the node dies mid-handler, another node fires it again after this.
    pub alarm_claim_lease_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            idle_evict_s: 300,
            eviction_interval_s: 30,
            alarm_poll_ms: None,
            alarm_claim_lease_ms: 30_000,
        }
    }
}

impl RuntimeConfig {
    /// The alarm poll interval on `engine` (the configured one, else the engine's default).
    pub fn alarm_poll(&self, engine: EngineKind) -> Duration {
        let ms = self.alarm_poll_ms.unwrap_or(match engine {
            EngineKind::Redis => 1_000,
            _ => 30_000,
        });
        Duration::from_millis(ms)
    }
}
