//! What the forward-auth end-to-end tests share, whatever the proxy (nginx, Caddy): the
//! proxy process itself, an upstream app that echoes the `X-Session-*` headers it received,
//! a browser's request and cookie jar, and a sessiond node on a fixed address that can stop
//! and come back.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{json, Value};
use sessiond::config::{Config, EngineKind};

pub const API_KEY: &str = "proxy-test-key-0123456789";
pub const SIGNING_KEY: &str = "proxy-test-signing-key-of-32-bytes-or-more";

/// A loopback address that was free a moment ago.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `name` in `PATH` or one of `extra` directories.
pub fn find_binary(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The proxy binary, or `None` (the test then says it skips) unless `require_var` is set,
/// which `./scripts/test` does so that CI never skips.
pub fn binary_or_skip(name: &str, extra: &[&str], require_var: &str) -> Option<PathBuf> {
    let found = find_binary(name, extra);
    if found.is_none() {
        if std::env::var_os(require_var).is_some() {
            panic!("{name} is required ({require_var} is set) but not installed");
        }
        eprintln!("SKIPPED: {name} not installed (./scripts/test installs it)");
    }
    found
}

/// A private proxy process in a temp dir, listening on `addr`, killed on drop.
pub struct Proxy {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    log_file: &'static str,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// What the proxy wrote to its log file so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log_file)).unwrap_or_default()
    }
}

/// Starts the proxy `name`: `command(dir, addr)` writes its configuration into the fresh
/// temp dir `dir` and returns the command that serves on `addr` and logs to `log_file` in
/// `dir`. Tried again on a new address when the process exits before listening (the free
/// address was taken meanwhile).
pub async fn start_proxy(
    name: &str,
    log_file: &'static str,
    within: Duration,
    mut command: impl FnMut(&Path, &str) -> Command,
) -> Proxy {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let child = command(dir.path(), &addr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut proxy = Proxy {
            child,
            addr,
            dir,
            log_file,
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if tokio::net::TcpStream::connect(&proxy.addr).await.is_ok() {
                return proxy;
            }
            if let Ok(Some(_)) = proxy.child.try_wait() {
                eprintln!("{name} exited (port taken?), retrying: {}", proxy.log());
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not listen on {}",
                proxy.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("{name} did not start after 5 attempts");
}

/// The upstream: answers every request with the `X-Session-*` headers it received.
pub async fn start_upstream() -> String {
    let echo = |headers: HeaderMap| async move {
        let seen: serde_json::Map<String, Value> = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-session-"))
            .map(|(name, v)| (name.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        axum::Json(Value::Object(seen))
    };
    let app = axum::Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// One browser request for `url`: (status, what the upstream saw, the non-empty Set-Cookie
/// values, the raw body).
pub async fn request(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, Vec<String>, String) {
    let mut req = http.get(url);
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|v| !v.trim().is_empty())
        .collect();
    let body = res.text().await.unwrap();
    let seen = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, seen, cookies, body)
}

/// The browser's cookie jar after storing `set` over `jar`.
pub fn store(jar: &str, set: &[String]) -> String {
    let mut pairs: Vec<(String, String)> = jar
        .split("; ")
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| (n.into(), v.into()))
        .collect();
    for s in set {
        let pair = s.split(';').next().unwrap_or_default();
        let (n, v) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("a Set-Cookie without a name=value pair: {s:?}"));
        pairs.retain(|(name, _)| name != n);
        pairs.push((n.into(), v.into()));
    }
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// sessiond on a fixed address (so the proxy's upstream stays valid across a restart).
pub struct Node {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    pub async fn start(addr: SocketAddr, data_dir: &Path) -> Node {
        let mut config = Config {
            engine: EngineKind::Sqlite,
            data_dir: data_dir.to_path_buf(),
            listen: addr,
            api_keys: vec![API_KEY.into()],
            ..Config::default()
        };
        config.middleware.signing_keys = vec![SIGNING_KEY.into()];
        config.validate().unwrap();
        let listener = rebind(addr).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sessiond::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Node { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Binds `addr` again once its previous owner has let go of it.
pub async fn rebind(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "cannot bind {addr} again: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Accepts connections on `addr` and never answers (a hung sessiond), until aborted.
pub async fn hang(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let hung = rebind(addr).await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    })
}
