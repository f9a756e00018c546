//! A private `redis-server` for tests (feature `testing`).
//!
//! Why: the engine must be tested against a real Redis, and tests must neither depend on a
//! server someone left running nor disturb one. Each [`RedisServer`] runs its own process on a
//! free loopback port, without persistence, in a temporary directory, and is killed on drop.
//! This is test support: it panics with a clear message instead of returning errors.
//! [`RedisCluster`] is the same for a 3-master Redis Cluster.

mod cluster;

pub use cluster::RedisCluster;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How many ports to try before giving up (another process may grab a freed port).
const START_ATTEMPTS: usize = 5;
/// How many times to poll for `PING` per attempt, and how long to wait between polls.
const PING_TRIES: usize = 100;
const PING_INTERVAL: Duration = Duration::from_millis(50);

/// A running private `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// AOF with `appendfsync always` (every acknowledged write on disk), kept across restarts.
    durable: bool,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot bind a loopback port for redis-server: {e}"),
    }
}

/// Whether a server on `port` answers `PING`.
fn answers_ping(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return false;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    matches!(redis::cmd("PING").query::<String>(&mut con), Ok(pong) if pong == "PONG")
}

fn temp_dir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("cannot create a temp dir for redis-server: {e}"),
    }
}

/// A started child and its port.
struct Started(Child, u16);

impl Started {
    fn into_server(self, dir: tempfile::TempDir, durable: bool) -> RedisServer {
        RedisServer {
            child: Some(self.0),
            port: self.1,
            durable,
            _dir: dir,
        }
    }
}

/// Spawns redis-server on `port` and waits for `PING`; `None` if it exited or never answered.
fn spawn_on(dir: &std::path::Path, port: u16, durable: bool) -> Option<Started> {
    spawn_with(dir, port, durable, &[])
}

/// [`spawn_on`] with extra server arguments (the cluster fixture's).
fn spawn_with(
    dir: &std::path::Path,
    port: u16,
    durable: bool,
    extra: &[String],
) -> Option<Started> {
    let persistence: &[&str] = if durable {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(persistence)
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not on PATH; run ./scripts/test (it installs redis-server) \
             or install Redis 7 yourself"
        ),
        Err(e) => panic!("cannot spawn redis-server: {e}"),
    };
    for _ in 0..PING_TRIES {
        if answers_ping(port) {
            return Some(Started(child, port));
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None; // exited (port taken?)
        }
        std::thread::sleep(PING_INTERVAL);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    ///
    /// Panics if `redis-server` is not installed (run `./scripts/test`, which installs it) or
    /// if no server could be started.
    pub fn start() -> RedisServer {
        Self::start_mode(false)
    }

    /// Starts a server whose every acknowledged write is on disk (AOF, `appendfsync always`)
    /// and survives [`RedisServer::restart`] and [`RedisServer::kill9`].
    pub fn start_durable() -> RedisServer {
        Self::start_mode(true)
    }

    fn start_mode(durable: bool) -> RedisServer {
        let dir = temp_dir();
        for _ in 0..START_ATTEMPTS {
            if let Some(child) = spawn_on(dir.path(), free_port(), durable) {
                return child.into_server(dir, durable);
            }
        }
        panic!("redis-server did not start after {START_ATTEMPTS} attempts");
    }

    /// Kills the server with SIGKILL (no shutdown save); [`RedisServer::restart`] brings it
    /// back on the same port with the same files.
    pub fn kill9(&mut self) {
        self.stop();
    }

    /// Starts the stopped server again on its port, with its files (a durable server comes
    /// back with every acknowledged write).
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..START_ATTEMPTS {
            if let Some(Started(child, _)) = spawn_on(self._dir.path(), self.port, self.durable) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(PING_INTERVAL);
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Starts a fresh server on `port` (a restart of a stopped one, for reconnect tests).
    pub fn start_on(port: u16) -> RedisServer {
        let dir = temp_dir();
        for _ in 0..START_ATTEMPTS {
            if let Some(child) = spawn_on(dir.path(), port, false) {
                return child.into_server(dir, false);
            }
            std::thread::sleep(PING_INTERVAL);
        }
        panic!("redis-server did not start on port {port}");
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server now (tests of an unreachable engine); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
