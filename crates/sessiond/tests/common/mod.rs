//! Test harness: a real sessiond listening on a free loopback port, on a chosen engine.
//!
//! Every HTTP test runs against each engine in [`engines`]: memory, SQLite (a fresh data dir)
//! and Redis (a private `redis-server` this harness starts; `./scripts/test` installs it).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use sessiond::config::{Config, EngineKind};
use sessiond_engine_redis::testing::RedisServer;
use tokio::sync::oneshot;

/// `middleware.signing_keys` of every Redis-engine test server (a cluster shares it).
pub const CLUSTER_SIGNING_KEY: &str = "test-cluster-signing-key-0123456789abcdef";

/// The engines every HTTP test runs on.
pub fn engines() -> [EngineKind; 3] {
    [EngineKind::Memory, EngineKind::Sqlite, EngineKind::Redis]
}

/// A running server; dropped = shut down.
pub struct TestServer {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub engine: EngineKind,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    _redis: Option<RedisServer>,
}

impl TestServer {
    /// Starts a server on `engine` with the defaults, changed by `tweak`.
    pub async fn start(engine: EngineKind, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let redis = (engine == EngineKind::Redis).then(RedisServer::start);
        let url = redis.as_ref().map(RedisServer::url);
        Self::start_with(engine, url, redis, tweak).await
    }

    /// Starts one node of a cluster: the Redis engine on a server someone else owns.
    pub async fn start_node(redis: &RedisServer, tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_with(EngineKind::Redis, Some(redis.url()), None, tweak).await
    }

    async fn start_with(
        engine: EngineKind,
        redis_url: Option<String>,
        redis: Option<RedisServer>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            engine,
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        if let Some(url) = redis_url {
            config.redis.url = url;
            // Nodes of one cluster share their signing key (sessiond refuses a per-process one
            // on Redis); every node of a test gets the same.
            config.middleware.signing_keys = vec![CLUSTER_SIGNING_KEY.into()];
        }
        tweak(&mut config);
        config.validate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sessiond::run(config, listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            http: reqwest::Client::new(),
            engine,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
            _redis: redis,
        }
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path))
    }
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path))
    }
    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path))
    }
    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.patch(self.url(path))
    }
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path))
    }

    /// Kills this server's private redis-server (tests of an unreachable engine).
    pub fn kill_redis(&mut self) {
        if let Some(redis) = self._redis.as_mut() {
            redis.stop();
        }
    }

    /// Stops the server and waits for a clean exit.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Polls `/metrics` until the counter `name` (no labels) reaches `at_least`, or panics after
/// `within`. Returns the value seen.
pub async fn wait_for_counter(
    server: &TestServer,
    name: &str,
    at_least: f64,
    within: std::time::Duration,
) -> f64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = counter(server, name).await;
        if value >= at_least {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {value} (< {at_least})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The server's `/metrics` text.
pub async fn metrics_text(server: &TestServer) -> String {
    let res = server.get("/metrics").send().await.unwrap();
    res.text().await.unwrap()
}

/// The value of the counter `name` (no labels) on `/metrics`; 0 when absent.
pub async fn counter(server: &TestServer, name: &str) -> f64 {
    metrics_text(server)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sends the request and returns status and JSON body (Null when the body is not JSON).
pub async fn json(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Asserts an error response has the `{error: {code, message}}` shape and the status.
pub fn assert_error(status: u16, body: &serde_json::Value, expected: u16, context: &str) {
    assert_eq!(status, expected, "{context}: status (body {body})");
    assert!(
        body["error"]["code"].is_string(),
        "{context}: error code in {body}"
    );
    assert!(
        body["error"]["message"].is_string(),
        "{context}: error message in {body}"
    );
}
