//! `idle`: server memory per idle socket.
//!
//! The server's VmRSS is read before the first socket opens and again once every handshake is
//! done and the RSS stopped moving; the difference over the socket count is what one idle
//! connection costs the server (socket buffers, per-connection task and state, and for
//! sessiond the user's resident state object: every socket is a different user).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

use crate::wire::{self, Endpoint, Flavor, Identity};
use crate::{rss_bytes, settled_rss, Args, Res};

pub async fn run(args: &Args, ep: &Endpoint) -> Res<String> {
    let n = args.num("conns", 10_000)?;
    let concurrency = args.num("connect-concurrency", 256)? as usize;
    let prefix = args.str("prefix", "idle");
    let pid = args.num("pid", 0)? as u32;
    if pid == 0 {
        return Err("idle needs --pid SERVER_PID".into());
    }
    let rss_before = rss_bytes(pid)?;
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let established = Arc::new(AtomicU64::new(0));
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<String>();
    let started = Instant::now();
    for i in 0..n {
        let (ep, permits, established, failed) = (
            ep.clone(),
            permits.clone(),
            established.clone(),
            failed_tx.clone(),
        );
        let user = format!("{prefix}-{i}");
        tokio::spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let who = Identity {
                user: &user,
                device: "d0",
                token: None,
            };
            let mut ws = match wire::open(&ep, Flavor::Channels, &who).await {
                Ok(ws) => ws,
                Err(e) => {
                    let _ = failed.send(format!("socket {i}: {e}"));
                    return;
                }
            };
            drop(permit);
            established.fetch_add(1, Ordering::Relaxed);
            let why = wire::hold(&mut ws).await;
            let _ = failed.send(format!("socket {i} ended while idle: {why}"));
        });
    }
    drop(failed_tx);
    let deadline = started + Duration::from_secs(300);
    while established.load(Ordering::Relaxed) < n {
        if let Ok(e) = failed_rx.try_recv() {
            return Err(e.into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {n} sockets established after 300 s",
                established.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    let rss_after = settled_rss(pid, Duration::from_secs(15)).await?;
    if let Ok(e) = failed_rx.try_recv() {
        return Err(e.into());
    }
    let per_conn = rss_after.saturating_sub(rss_before) / n.max(1);
    Ok(format!(
        "conns={n} rss_before={rss_before} rss_after={rss_after} bytes_per_conn={per_conn} \
         connect_s={connect_s:.2} connects_per_s={:.0}",
        n as f64 / connect_s.max(1e-9)
    ))
}
