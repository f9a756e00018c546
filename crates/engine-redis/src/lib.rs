//! The Redis engine of sessiond: every storage trait of `sessiond-store` on Redis 7.
//!
//! Why Redis: native key expiry and a server shared by many sessiond nodes. The engine keeps
//! exactly the behaviour of the in-memory reference engine (the shared suite in
//! `sessiond_store::testsuite` runs against it), with these Redis-specific choices:
//!
//! - **One connection, multiplexed.** A [`redis::aio::ConnectionManager`] pipelines every
//!   caller's commands over one socket and reconnects on its own; a dead server surfaces as
//!   [`StoreError::Unavailable`], never as a panic. On Redis Cluster
//!   ([`RedisEngine::connect_cluster`]) the client's cluster connection does the same per
//!   master and routes by slot (module `conn`).
//! - **Atomicity by Lua.** Every compare-and-set (replace, insert-if-absent, touch, guarded
//!   alarm delete, cache namespace admission) is one script (module `scripts`), sent with
//!   `EVALSHA`.
//! - **Cluster-friendly keys.** All keys of one object share a hash tag ([`keys`]); updates
//!   that span objects (record + index) are separate calls ordered so readers stay correct.
//!   The one change that must span two objects atomically, a stream fork and its source's
//!   count, is one script on a standalone server and a single-slot protocol on a cluster
//!   (`stream_forks`).
//! - **Native TTLs plus caller time.** Session hashes and cache entries carry `PEXPIREAT`, so
//!   Redis drops them by itself; reads still compare stored deadlines with the caller's `now`,
//!   so an expired record is never returned. Session hashes outlive their deadline by a grace
//!   (`session_expiry`): the session sweep deletes them with their expiry event, exactly
//!   once on any number of nodes. The other sweepers only tidy index entries.
//!
//! Durability: a `Durability::Confirmed` write returns once Redis replied, i.e. the write is
//! in the server's memory. Whether it is on disk depends on the server's AOF: with
//! `appendonly yes` + `appendfsync always` an acknowledged write is on disk; with
//! `appendfsync everysec` a crash may lose up to about one second of writes; without AOF a
//! restart loses everything since the last RDB snapshot. `Durability::Unconfirmed` is treated
//! like `Confirmed` (Redis offers no cheaper acknowledgement).
//!
//! Module map:
//! - `conn`: the command connection (standalone or cluster; pipelines split by slot).
//! - [`keys`]: the key scheme (table) and escaping of user-controlled parts.
//! - `scripts`: the Lua scripts (one per atomic operation).
//! - `sessions`: [`sessiond_store::SessionStore`] (session hash + per-user index);
//!   `session_expiry`: the expiry index and the sweep that ends sessions with their event.
//! - `cache`: [`sessiond_store::CacheStore`] (namespaced entries, namespace registry for the limit).
//! - `objects`: [`sessiond_store::ObjectStore`] (object state, per-kind index, alarms).
//! - `streams`, `stream_commits`, `stream_scripts`: [`sessiond_store::StreamStore`] (one hash
//!   tag per stream, pipelined commits); `stream_forks`: forks on Redis Cluster (two slots); `stream_wakes`: [`sessiond_store::StreamWakes`] (tail
//!   notifications over pub/sub).
//! - `realtime`: [`sessiond_store::RealtimeBus`] (channel logs in Redis Streams, pub/sub to
//!   every node; see [`RedisEngine::realtime_bus`]).
//! - `presence`: [`sessiond_store::PresenceStore`] (leased presence sets, one script per
//!   change).
//! - `testing` (feature `testing`): a private `redis-server` for tests.
//!
//! Layering, bottom → top: `slots` (Cluster slot arithmetic) → [`keys`] (the key scheme, and
//! the choice of a rotated session id in its old slot, which needs both) → `conn` and the
//! script sources (`scripts`, `stream_scripts` with the producer row format its scripts
//! store) → the engine handle ([`RedisEngine`], here) → one store implementation per file,
//! where the stream reader (`streams`) sits below the commit queue (`stream_commits`) and the
//! Cluster fork protocol (`stream_forks`), which reuse its argument helpers.
//!
//! Metrics: every call records `sessiond_engine_command_seconds{engine="redis",op=...}` (its
//! count is the round trips per operation); stream commits also record
//! `sessiond_engine_commit_batch_size{engine="redis"}` (commits per pipeline), the subscriber
//! `sessiond_engine_redis_wake_lag_seconds` (publish to receipt of a tail notification) and
//! `sessiond_engine_redis_subscriptions_total` ((re)subscriptions).

pub mod keys;

mod cache;
mod cluster_con;
mod conn;
mod erasures;
mod objects;
mod outbox;
mod presence;
mod realtime;
mod scripts;
mod session_expiry;
mod session_update;
mod sessions;
mod slots;
mod stream_commits;
mod stream_forks;
mod stream_scripts;
mod stream_wakes;
mod streams;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{FromRedisValue, RedisError};
use sessiond_store::{EngineAdmin, Result, StoreError};

use crate::conn::Con;
use crate::keys::Keys;
use crate::scripts::Scripts;

pub use realtime::RedisBus;

/// Options of the Redis engine.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Prefix of every key (default `sessiond`); lets several deployments share one server.
    /// Must not contain `{` or `}` (they would break Cluster hash tags).
    pub key_prefix: String,
    /// How long Redis keeps a session hash past its deadline (ms) before forgetting it
    /// natively. Normally the expiry sweep deletes it at the deadline, with its
    /// `session.expired` event; the native TTL is the safety net for when no node sweeps (all
    /// down longer than this: such sessions end without an event).
    pub session_expiry_grace_ms: u64,
}

/// Default of [`RedisOptions::session_expiry_grace_ms`]: one day.
pub const DEFAULT_SESSION_EXPIRY_GRACE_MS: u64 = 86_400_000;

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "sessiond".to_string(),
            session_expiry_grace_ms: DEFAULT_SESSION_EXPIRY_GRACE_MS,
        }
    }
}

/// The Redis engine: implements `SessionStore`, `CacheStore`, `ObjectStore`, `StreamStore`,
/// `StreamWakes`, `SealLease` and [`EngineAdmin`] of `sessiond_store`.
pub struct RedisEngine {
    con: Con,
    /// For connections of their own (the pub/sub subscribers): the server, or the cluster's
    /// seed nodes (a subscriber uses the first that answers; classic `PUBLISH` reaches every
    /// node of a cluster).
    seeds: Arc<Vec<redis::Client>>,
    /// Names this instance in tail notifications.
    node: String,
    /// Queue of the stream commit writer task.
    commits: stream_commits::CommitQueue,
    /// Tail notification sinks.
    wake_sinks: stream_wakes::Sinks,
    /// The fencing token of this instance's sealing lease (0: never held); seals carry it.
    seal_token: std::sync::atomic::AtomicU64,
    keys: Keys,
    scripts: Scripts,
    closed: AtomicBool,
    /// `SCAN` position of the session-index sweeper (resumes where the last sweep stopped):
    /// the rank of the master it walks (always 0 on a standalone server) and its cursor there.
    session_sweep_cursor: Mutex<(usize, u64)>,
    /// Whether this handle looked for outbox streams missing from the outbox index.
    outbox_rediscovered: std::sync::atomic::AtomicBool,
    /// Rank in the namespace registry where the cache sweeper resumes.
    cache_sweep_cursor: Mutex<usize>,
    /// The same for the registry of reserved namespaces.
    cache_sweep_cursor_reserved: Mutex<usize>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// Records one Redis round trip of kind `op` begun at `start`: its latency
/// (`sessiond_engine_command_seconds{op}`) and a count per kind
/// (`sessiond_engine_redis_round_trips_total{op}`), so a node's round trips per request are a
/// ratio of two counters.
pub(crate) fn round_trip(op: &'static str, start: Instant) {
    metrics::histogram!("sessiond_engine_command_seconds", "engine" => "redis", "op" => op)
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("sessiond_engine_redis_round_trips_total", "op" => op).increment(1);
}

impl RedisEngine {
    /// Connects to `url` (`redis://[user:pass@]host:port/db`, `rediss://` for TLS when the
    /// client supports it) and checks the server answers.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Arc<RedisEngine>> {
        check_prefix(&options)?;
        let client = redis::Client::open(url).map_err(map_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let con = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(map_err)?;
        Self::start(Con::Single(con), vec![client], options).await
    }

    /// Connects to a Redis Cluster through its seed nodes `urls` (any masters or replicas;
    /// the client discovers the rest with `CLUSTER SLOTS`) and checks it answers. Commands
    /// are routed by slot and follow `MOVED`/`ASK`; see the module `conn` for pipelines.
    pub async fn connect_cluster(
        urls: &[String],
        options: RedisOptions,
    ) -> Result<Arc<RedisEngine>> {
        check_prefix(&options)?;
        if urls.is_empty() {
            return Err(StoreError::Unavailable(
                "redis cluster: no seed url configured".into(),
            ));
        }
        let cluster = ClusterClientBuilder::new(urls.to_vec())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(3)
            .build()
            .map_err(map_err)?;
        let con = conn::ClusterCon::connect(cluster).await.map_err(map_err)?;
        let seeds = urls
            .iter()
            .map(|u| redis::Client::open(u.as_str()))
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(map_err)?;
        Self::start(Con::Cluster(con), seeds, options).await
    }

    /// Whether the engine runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.con.is_cluster()
    }

    async fn start(
        con: Con,
        seeds: Vec<redis::Client>,
        options: RedisOptions,
    ) -> Result<Arc<RedisEngine>> {
        let keys = Keys::new(&options.key_prefix);
        let node = stream_wakes::node_id();
        let commits = stream_commits::start_commit_queue(con.clone(), keys.clone(), node.clone());
        let engine = Arc::new(RedisEngine {
            con,
            seeds: Arc::new(seeds),
            node,
            commits,
            wake_sinks: Arc::default(),
            seal_token: std::sync::atomic::AtomicU64::new(0),
            keys,
            scripts: Scripts::new(options.session_expiry_grace_ms),
            closed: AtomicBool::new(false),
            session_sweep_cursor: Mutex::new((0, 0)),
            outbox_rediscovered: std::sync::atomic::AtomicBool::new(false),
            cache_sweep_cursor: Mutex::new(0),
            cache_sweep_cursor_reserved: Mutex::new(0),
        });
        engine.ping().await?;
        Ok(engine)
    }

    /// A realtime bus on the engine's server or cluster (its command connection, plus one
    /// subscriber connection of its own). One per node: each starts a subscriber task.
    pub fn shared_realtime_bus(&self) -> Result<Arc<RedisBus>> {
        Ok(Arc::new(RedisBus::start(
            self.con()?,
            self.seeds.clone(),
            self.keys.clone(),
        )))
    }

    /// A realtime bus on the server at `url` (the engine's command connection, plus one
    /// subscriber connection of its own). One per node: each starts a subscriber task.
    /// (Kept for callers that name the URL; the bus subscribes to `url`.)
    pub fn realtime_bus(&self, url: &str) -> Result<Arc<RedisBus>> {
        let client = redis::Client::open(url).map_err(map_err)?;
        Ok(Arc::new(RedisBus::start(
            self.con()?,
            Arc::new(vec![client]),
            self.keys.clone(),
        )))
    }

    /// A handle on the shared connection, or `Unavailable` once closed.
    fn con(&self) -> Result<Con> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("redis engine closed".into()));
        }
        Ok(self.con.clone())
    }

    /// Runs one Redis round trip, timing it and mapping its error.
    async fn timed<T, F>(&self, op: &'static str, fut: F) -> Result<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let start = Instant::now();
        let out = fut.await;
        round_trip(op, start);
        out.map_err(map_err)
    }

    /// Sends one command.
    async fn query<T: FromRedisValue>(&self, op: &'static str, cmd: &redis::Cmd) -> Result<T> {
        let mut con = self.con()?;
        self.timed(op, cmd.query_async(&mut con)).await
    }

    /// Sends a pipeline (one round trip).
    async fn query_pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        let mut con = self.con()?;
        self.timed(op, pipe.query_async(&mut con)).await
    }

    /// Runs a script (`EVALSHA`, loading it on `NOSCRIPT`).
    async fn eval<T: FromRedisValue>(
        &self,
        op: &'static str,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut con = self.con()?;
        self.timed(op, inv.invoke_async(&mut con)).await
    }
}

/// How long connecting to a server (or a cluster node) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one reply may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses a key prefix with braces (they would break Cluster hash tags).
fn check_prefix(options: &RedisOptions) -> Result<()> {
    if options.key_prefix.contains(['{', '}']) {
        return Err(StoreError::Unavailable(
            "invalid redis key prefix: it must not contain `{` or `}`".into(),
        ));
    }
    Ok(())
}

/// Maps a client error: undecodable replies are `Corrupt`, everything else `Unavailable`.
fn map_err(e: RedisError) -> StoreError {
    match e.kind() {
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
            StoreError::Corrupt(format!("redis reply: {e}"))
        }
        _ => StoreError::Unavailable(format!("redis: {e}")),
    }
}

/// Parses a decimal field, or reports the record as corrupt.
fn parse_num<T: std::str::FromStr>(what: &str, raw: &[u8]) -> Result<T> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("field {what} is not a number")))
}

/// Decodes UTF-8 text, or reports the record as corrupt.
fn parse_text(what: &str, raw: Vec<u8>) -> Result<String> {
    String::from_utf8(raw).map_err(|_| StoreError::Corrupt(format!("field {what} is not UTF-8")))
}

/// Most work one sweep call does, whatever batch the caller asks for (bounds script time).
const MAX_SWEEP_BATCH: usize = 10_000;

/// A caller's count as a Redis `LIMIT`/`COUNT` argument (Redis takes signed 64-bit).
fn redis_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Locks a cursor mutex (never held across an await), ignoring poisoning.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl EngineAdmin for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn exclusive(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<()> {
        // On a cluster: every master the slot map names (a dead one makes its slots fail).
        let con = self.con()?;
        let masters = self.timed("ping", con.masters()).await?;
        for node in &masters {
            let ping = redis::cmd("PING");
            let pong: String = self.timed("ping", con.query_on(node, &ping)).await?;
            if pong != "PONG" {
                return Err(StoreError::Unavailable(format!(
                    "unexpected PING reply {pong:?}"
                )));
            }
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        lock(&self.wake_sinks).clear();
        Ok(())
    }
}
