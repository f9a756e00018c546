//! In-process micro benchmark of `Decider::decide`: the CPU a decision costs without HTTP,
//! nginx or another process in the way, so a change to the decision path can be measured in
//! seconds on a busy machine.
//!
//! ```sh
//! cargo run --release -p sessiond-layer --example decide_micro            # SQLite in a temp dir
//! MICRO_ENGINE=memory MICRO_CLIENTS=2000 MICRO_ROUNDS=20 cargo run --release …
//! ```
//!
//! It makes `MICRO_CLIENTS` first visits, then decides `MICRO_ROUNDS` rounds of returning
//! visits (each client once per round, the cookies of its previous answer), and prints the
//! process CPU time per decision of both phases. Middleware defaults (layout A, fingerprint on);
//! analytics go to a sink that serializes each point as JSON, like the stream sink would.
//! Rounds are paced so no client exceeds the default 50 decisions per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_middleware::{AnalyticsSink, DataPoint, Decider, DecisionInput, MiddlewareConfig};
use sessiond_runtime::{Runtime, RuntimeConfig};
use sessiond_store::memory::MemoryEngine;
use sessiond_store::Stores;

/// Serializes every point (the work the stream sink's drain does), then drops it.
struct JsonSink;

impl AnalyticsSink for JsonSink {
    fn record(&self, point: DataPoint) {
        std::hint::black_box(serde_json::to_vec(&point).ok());
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `Cookie` header a browser would send after receiving `set_cookies` on top of `jar`.
fn apply(jar: &mut Vec<(String, String)>, set_cookies: &[String]) -> String {
    for set in set_cookies {
        let pair = set.split(';').next().unwrap_or("");
        if let Some((name, value)) = pair.split_once('=') {
            jar.retain(|(n, _)| n != name);
            jar.push((name.to_string(), value.to_string()));
        }
    }
    jar.iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn input(cookie: Option<String>, i: usize) -> DecisionInput {
    DecisionInput {
        cookie,
        ip: Some(format!("10.0.{}.{}", i / 250, i % 250)),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) micro-bench".into()),
        accept_language: Some("en-US,en;q=0.9".into()),
        accept_encoding: Some("gzip, deflate, br".into()),
        accept: Some("text/html".into()),
        url: Some("http://bench.local/page?x=1".into()),
        method: Some("GET".into()),
        ..DecisionInput::default()
    }
}

/// CPU time of this process (the decisions and any engine thread).
fn process_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name; USER_HZ = 100.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn main() -> anyhow::Result<()> {
    let clients = env_usize("MICRO_CLIENTS", 2000);
    let rounds = env_usize("MICRO_ROUNDS", 20);
    let engine = std::env::var("MICRO_ENGINE").unwrap_or_else(|_| "sqlite".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    rt.block_on(async {
        let stores = match engine.as_str() {
            "memory" => Stores::from_engine(Arc::new(MemoryEngine::new())),
            _ => Stores::from_engine(SqliteEngine::open(dir.path(), SqliteOptions::default())?),
        };
        let config = MiddlewareConfig {
            signing_keys: vec!["micro-bench-signing-key-0123456789abcdef".into()],
            ..MiddlewareConfig::default()
        };
        let mut builder = Runtime::builder(stores.objects.clone(), RuntimeConfig::default());
        let decider = Decider::new(
            config,
            &mut builder,
            stores.objects.clone(),
            stores.admin.exclusive(),
            Arc::new(JsonSink),
        )
        .map_err(anyhow::Error::msg)?;
        let runtime = builder.start();

        let mut jars: Vec<(Vec<(String, String)>, String)> = Vec::with_capacity(clients);
        let cpu = process_cpu();
        let wall = Instant::now();
        for i in 0..clients {
            let decision = decider
                .decide(&input(None, i))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut jar = Vec::new();
            let header = apply(&mut jar, &decision.set_cookies);
            jars.push((jar, header));
        }
        let first_cpu = process_cpu().saturating_sub(cpu);
        println!(
            "first visits: {clients} in {:?}, {:.1} µs CPU/decision",
            wall.elapsed(),
            first_cpu.as_secs_f64() * 1e6 / clients as f64
        );

        let mut busy = Duration::ZERO;
        let mut decisions = 0usize;
        for _ in 0..rounds {
            let round_started = Instant::now();
            let cpu = process_cpu();
            for (i, (jar, header)) in jars.iter_mut().enumerate() {
                let decision = decider
                    .decide(&input(Some(header.clone()), i))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if decision.session.is_new_client {
                    anyhow::bail!("a returning client was not recognised");
                }
                if !decision.set_cookies.is_empty() {
                    *header = apply(jar, &decision.set_cookies);
                }
                decisions += 1;
            }
            busy += process_cpu().saturating_sub(cpu);
            // At most one decision per client per 25 ms: under the default 50/s.
            let pause = Duration::from_millis(25).saturating_sub(round_started.elapsed());
            tokio::time::sleep(pause).await;
        }
        println!(
            "returning: {decisions} decisions, {:.1} µs CPU/decision",
            busy.as_secs_f64() * 1e6 / decisions.max(1) as f64
        );
        runtime.shutdown().await;
        stores.admin.close().await?;
        anyhow::Ok(())
    })
}
