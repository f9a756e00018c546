//! A private 3-master Redis Cluster for tests.
//!
//! Why a real cluster: slot routing, `MOVED`/`ASK` and `CROSSSLOT` refusals only happen on
//! one, so the engine's cluster mode is tested against `redis-server --cluster-enabled yes`
//! ×3 joined by `redis-cli --cluster create`, on free loopback ports (client and bus port),
//! without persistence, each in its own temporary directory, killed on drop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, spawn_with, temp_dir, Started, START_ATTEMPTS};

/// How many masters the fixture starts.
const MASTERS: usize = 3;
/// How long `redis-cli --cluster create` plus convergence may take.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// One master of the fixture.
struct Node {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A running private Redis Cluster of three masters (no replicas).
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports())
            .finish()
    }
}

/// Starts one cluster-enabled server on a free port with a free bus port.
fn start_node() -> Node {
    let dir = temp_dir();
    for _ in 0..START_ATTEMPTS {
        let (port, bus) = (free_port(), free_port());
        if port == bus {
            continue;
        }
        let extra = [
            "--cluster-enabled".to_string(),
            "yes".into(),
            "--cluster-port".into(),
            bus.to_string(),
            "--cluster-config-file".into(),
            dir.path().join("nodes.conf").display().to_string(),
            "--cluster-node-timeout".into(),
            "2000".into(),
            // The tests that kill a master assert that the others keep serving their own
            // slots. With Redis's default (`yes`) the survivors refuse every command with
            // CLUSTERDOWN once they mark the dead master failed (after the node timeout),
            // so a commit that happened to be retried past that instant failed too.
            "--cluster-require-full-coverage".into(),
            "no".into(),
        ];
        if let Some(Started(child, port)) = spawn_with(dir.path(), port, false, &extra) {
            return Node {
                child,
                port,
                _dir: dir,
            };
        }
    }
    panic!("cluster redis-server did not start after {START_ATTEMPTS} attempts");
}

/// `CLUSTER INFO` of the node on `port` says the cluster is up and every node agrees on the
/// slot map (`cluster_state:ok`, all slots assigned, everyone known).
fn cluster_ok(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return false;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    let Ok(info) = redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut con) else {
        return false;
    };
    info.contains("cluster_state:ok")
        && info.contains("cluster_slots_ok:16384")
        && info.contains(&format!("cluster_known_nodes:{MASTERS}"))
}

impl RedisCluster {
    /// Starts three masters, joins them (`redis-cli --cluster create ... --cluster-replicas 0`)
    /// and waits until every node reports `cluster_state:ok`.
    ///
    /// Panics if `redis-server` or `redis-cli` is missing or the cluster does not form.
    pub fn start() -> RedisCluster {
        let nodes: Vec<Node> = (0..MASTERS).map(|_| start_node()).collect();
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in cluster.ports() {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("cannot run redis-cli (install Redis 7): {e}"),
        }
        let deadline = Instant::now() + FORM_TIMEOUT;
        while !cluster.ports().into_iter().all(cluster_ok) {
            assert!(
                Instant::now() < deadline,
                "the redis cluster did not reach cluster_state:ok within {FORM_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// The masters' client ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Kills master `i` with SIGKILL (no replica takes over: its slots become unreachable).
    pub fn kill_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let _ = node.child.kill();
        let _ = node.child.wait();
    }

    /// Seed URLs of every master (any one would do; the client discovers the rest).
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}
