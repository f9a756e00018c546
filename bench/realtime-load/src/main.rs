//! Load generator for realtime hubs (`bench/realtime/run`): one client for sessiond and for a
//! Socket.IO server, so both are measured by the same code on the same cores.
//!
//! Three modes, each printing one `RESULT key=value ...` line on stdout for the bench script:
//!
//! - `idle`: opens N sockets (bounded connect concurrency), waits until every handshake is
//!   done and the server's RSS has settled, and reports the server's VmRSS growth per socket.
//! - `broadcast`: K sockets subscribe to one channel/room; a publisher socket publishes
//!   fixed-size messages, each carrying its sequence number and send time, keeping at most W
//!   messages not yet received by all K; reports deliveries/s and delivery latency p50/p99.
//! - `presence`: U users × D devices on the seed protocol; per user, the devices take turns
//!   sending `update_presence`, and a round trip ends when all D devices received
//!   `presence_updated`; reports round trips/s and round-trip p50/p99.
//!
//! Arguments are `--key value` pairs; see `usage()`.

mod broadcast;
mod idle;
mod presence;
mod wire;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wire::{Endpoint, Target};

/// A failure, for the operator: whatever failed underneath, printed as a message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Result alias.
pub type Res<T> = Result<T, Error>;

fn usage() -> &'static str {
    "usage: sessiond-bench-realtime-load <idle|broadcast|presence> --target sessiond|socketio --addr HOST:PORT [options]
  common:    --key SERVICE_KEY (sessiond)  --pid SERVER_PID (for RSS)
  idle:      --conns N (10000) --connect-concurrency C (256) --prefix NAME (idle)
  broadcast: --subscribers K (1000) --duration SECS (10) --inflight W (32) --body BYTES (100)
             --warmup MESSAGES (200) --channel NAME (room:bench)
  presence:  --users U (100) --devices D (3) --duration SECS (10) --tokens FILE (sessiond:
             one session id per line, user i uses line i)"
}

/// `--key value` arguments.
pub struct Args {
    mode: String,
    kv: HashMap<String, String>,
}

impl Args {
    fn parse() -> Res<Args> {
        let mut it = std::env::args().skip(1);
        let mode = it.next().ok_or_else(|| usage().to_string())?;
        let mut kv = HashMap::new();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {k}\n{}", usage()))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            kv.insert(key.to_string(), v);
        }
        Ok(Args { mode, kv })
    }

    /// A string argument with a default.
    pub fn str(&self, key: &str, default: &str) -> String {
        self.kv
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    /// An optional string argument.
    pub fn opt(&self, key: &str) -> Option<String> {
        self.kv.get(key).cloned()
    }

    /// A numeric argument with a default.
    pub fn num(&self, key: &str, default: u64) -> Res<u64> {
        match self.kv.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key} must be a number, not {v}").into()),
        }
    }

    fn endpoint(&self) -> Res<Endpoint> {
        Ok(Endpoint {
            addr: self
                .opt("addr")
                .ok_or_else(|| format!("--addr is required\n{}", usage()))?,
            target: Target::parse(&self.str("target", ""))?,
            key: self.opt("key"),
        })
    }
}

/// Microseconds since the first call (the clock every send time and receive time uses).
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// VmRSS of `pid` in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status").into())
}

/// CPU time (user + system, seconds) `pid` has used so far, from `/proc/<pid>/stat`; `None`
/// when it cannot be read. Lets a run on a shared machine say how much CPU each side got.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start at the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

/// CPU seconds used by the server (`--pid`) and by this process, for before/after deltas.
pub fn cpu_pair(server: u32) -> (f64, f64) {
    let me = std::process::id();
    (
        cpu_seconds(server).unwrap_or(0.0),
        cpu_seconds(me).unwrap_or(0.0),
    )
}

/// Waits until the RSS of `pid` stops moving (two readings 500 ms apart within 0.5 %), at
/// most `limit`; returns the last reading.
pub async fn settled_rss(pid: u32, limit: Duration) -> Res<u64> {
    let deadline = Instant::now() + limit;
    let mut last = rss_bytes(pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_bytes(pid)?;
        let moved = now.abs_diff(last) as f64 / last.max(1) as f64;
        if moved < 0.005 || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// The `q`-quantile (0..=1) of sorted samples; 0 when empty.
pub fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn run(args: Args) -> Res<String> {
    let ep = args.endpoint()?;
    match args.mode.as_str() {
        "idle" => idle::run(&args, &ep).await,
        "broadcast" => broadcast::run(&args, &ep).await,
        "presence" => presence::run(&args, &ep).await,
        other => Err(format!("unknown mode {other}\n{}", usage()).into()),
    }
}

fn main() {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    now_us();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(line) => println!("RESULT {line}"),
        Err(e) => {
            eprintln!("sessiond-bench-realtime-load: {e}");
            std::process::exit(1);
        }
    }
    // Thousands of sockets may still be open; exiting closes them all at once.
    runtime.shutdown_background();
}
