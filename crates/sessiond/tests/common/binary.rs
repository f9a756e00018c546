//! The real `sessiond` binary as a child process (on a free port), for tests that restart it,
//! kill it, or measure it from `/proc`. Included by path (`#[path = "common/binary.rs"]`) only
//! in sessiond's own tests: it needs `CARGO_BIN_EXE_sessiond`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Starts `sessiond serve --listen 127.0.0.1:0 <args>` with JSON logs, no inherited API keys
/// and extra environment `env`, and waits until it listens; returns the child and its base URL
/// (`http://127.0.0.1:<port>`, read from the log line announcing the listener). The child's
/// stderr is drained in the background. `TEST_SESSIOND_BIN` names another build to run (e.g.
/// `target/release/sessiond` for full-size measurements).
pub fn serve<'a>(
    args: impl IntoIterator<Item = &'a OsStr>,
    env: &[(&str, String)],
) -> (Child, String) {
    let (child, base, _) = serve_logged(args, env);
    (child, base)
}

/// The log lines a child wrote to stderr so far (kept for the child's whole life).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The JSON log events so far (lines that are not JSON are skipped).
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (at most 10 s) until an event matches `f`, and returns it.
    pub fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(what, Duration::from_secs(10), f)
    }

    /// [`wait_for`](Self::wait_for) with another deadline.
    pub fn wait_for_within(
        &self,
        what: &str,
        within: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(event) = self.events().into_iter().find(|e| f(e)) {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what} in {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// [`serve`], also returning every line the child logs (before and after it listens).
pub fn serve_logged<'a>(
    args: impl IntoIterator<Item = &'a OsStr>,
    env: &[(&str, String)],
) -> (Child, String, Logs) {
    let bin = std::env::var("TEST_SESSIOND_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sessiond").to_string());
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("SESSIOND_LOG__FORMAT", "json")
        .env_remove("SESSIOND_API_KEYS")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("start sessiond");
    let logs = Logs::default();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("sessiond exited before listening")
            .unwrap();
        logs.0.lock().unwrap().push(line.clone());
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if event["fields"]["message"] == "sessiond listening" {
            break event["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    let kept = logs.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.0.lock().unwrap().push(line);
        }
    });
    (child, format!("http://{addr}"), logs)
}

/// A running `sessiond serve`; killed when dropped.
pub struct Binary {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its log lines (JSON).
    pub logs: Logs,
    /// The data directory of a node on Redis (cold tier, files), removed with it.
    _dir: Option<tempfile::TempDir>,
}

/// The `middleware.signing_keys` override every node of a test cluster shares (on Redis
/// sessiond refuses to start with a per-process key).
pub fn shared_signing_key() -> (&'static str, String) {
    (
        "SESSIOND_MIDDLEWARE__SIGNING_KEYS",
        format!("[{}]", "ab".repeat(32)),
    )
}

impl Binary {
    /// Starts `sessiond serve` with `args` and extra environment and waits until it listens.
    pub fn start<'a>(args: impl IntoIterator<Item = &'a OsStr>, env: &[(&str, String)]) -> Binary {
        let (child, base, logs) = serve_logged(args, env);
        Binary {
            child,
            base,
            logs,
            _dir: None,
        }
    }

    /// Starts the binary on SQLite in `data_dir` with extra environment (config overrides such
    /// as `SESSIOND_STREAMS__MAX_JSON_DEPTH`), and waits until it listens (see [`serve`]).
    pub fn spawn(data_dir: &Path, env: &[(&str, String)]) -> Binary {
        let args = [
            OsStr::new("--engine"),
            OsStr::new("sqlite"),
            OsStr::new("--data-dir"),
        ];
        let (child, base, logs) = serve_logged(args.into_iter().chain([data_dir.as_os_str()]), env);
        Binary {
            child,
            base,
            logs,
            _dir: None,
        }
    }

    /// Starts one node of a cluster: the binary on the Redis engine at `redis_url`, with
    /// extra arguments and environment (after the shared signing key, so `env` may replace
    /// it), in a data directory of its own.
    pub fn spawn_on_redis(redis_url: &str, args: &[&str], env: &[(&str, String)]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let fixed = ["--engine", "redis", "--redis-url", redis_url];
        let args = fixed.iter().chain(args).map(OsStr::new);
        let args = args.chain([OsStr::new("--data-dir"), dir.path().as_os_str()]);
        let env: Vec<(&str, String)> = std::iter::once(shared_signing_key())
            .chain(env.iter().cloned())
            .collect();
        let (child, base, logs) = serve_logged(args, &env);
        Binary {
            child,
            base,
            logs,
            _dir: Some(dir),
        }
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// SIGKILL: no flush, no shutdown hook.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the clean exit (the SQLite writer checkpoints its WAL).
    pub fn stop(mut self) {
        self.terminate();
        assert!(self.child.wait().unwrap().success(), "clean exit");
    }

    /// [`stop`](Self::stop), then `check` over every line it logged (to its last).
    pub fn stop_checked(self, check: impl FnOnce(&[String])) {
        let logs = self.logs.clone();
        self.stop();
        logs.wait_for("sessiond stopped cleanly", |e| {
            e["fields"]["message"] == "sessiond stopped cleanly"
        });
        check(&logs.lines());
    }

    /// Sends SIGTERM and returns at once.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }

    /// Waits until the process exited, at most until `deadline`; `None` if it still runs.
    pub fn exited_by(&mut self, deadline: Instant) -> Option<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a `text/plain` stream at `url` with `key`, expecting 201.
pub async fn create_text_stream(http: &reqwest::Client, url: &str, key: &str) {
    let res = http
        .put(url)
        .bearer_auth(key)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "creating {url}");
}

/// The sum of the samples of metric `name` (any labels) on `base`'s `/metrics`; 0 if absent.
pub async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// Bytes of every file under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
