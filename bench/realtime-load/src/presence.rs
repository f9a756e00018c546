//! `presence`: seed C's `update_presence` round trips, U users × D devices.
//!
//! Every device is its own socket on the seed protocol (sessiond: `/__user-session` with the
//! device's own session id from `--tokens`; Socket.IO: `proto=seed`). Per user, the devices
//! take turns: device `r mod D` sends `update_presence` (alternating `away`/`online`), and the
//! round trip ends when **all D devices** received `presence_updated` — the same work on both
//! servers: validate, store, broadcast to the user's sockets. Users run concurrently, each a
//! closed loop, for `--duration` seconds after a short warm-up.

use std::time::Duration;

use futures_util::future::try_join_all;

use crate::wire::{self, Endpoint, Flavor, Identity, Ws};
use crate::{cpu_pair, now_us, quantile, Args, Res};

/// Rounds per user before measuring.
const WARMUP_ROUNDS: u64 = 5;

/// Runs rounds until `rounds` are done or `until_us` passed (checked between rounds); returns
/// the sockets, the rounds done and their latencies (µs).
async fn user_loop(
    mut sockets: Vec<Ws>,
    ep: Endpoint,
    rounds: u64,
    until_us: u64,
) -> Res<(Vec<Ws>, u64, Vec<u32>)> {
    let mut latencies = Vec::new();
    let devices = sockets.len() as u64;
    let mut round = 0u64;
    while round < rounds && now_us() < until_us {
        let presence = if round.is_multiple_of(2) {
            "away"
        } else {
            "online"
        };
        let started = now_us();
        let sender = &mut sockets[(round % devices) as usize];
        wire::send(sender, wire::presence_frame(ep.target, presence)).await?;
        let waits = sockets
            .iter_mut()
            .map(|ws| wire::wait_for(ws, wire::is_presence_updated));
        try_join_all(waits).await?;
        latencies.push((now_us() - started).min(u64::from(u32::MAX)) as u32);
        round += 1;
    }
    Ok((sockets, round, latencies))
}

/// Runs every user's loop concurrently; returns the sockets, total rounds and latencies.
async fn all_users(
    per_user: Vec<Vec<Ws>>,
    ep: &Endpoint,
    rounds: u64,
    until_us: u64,
) -> Res<(Vec<Vec<Ws>>, u64, Vec<u32>)> {
    let tasks: Vec<_> = per_user
        .into_iter()
        .map(|sockets| tokio::spawn(user_loop(sockets, ep.clone(), rounds, until_us)))
        .collect();
    let (mut sockets, mut total, mut latencies) = (Vec::new(), 0, Vec::new());
    for task in tasks {
        let (ws, n, part) = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .map_err(|_| "a user's rounds did not finish within 120 s".to_string())?
            .map_err(|e| format!("user task: {e}"))??;
        sockets.push(ws);
        total += n;
        latencies.extend(part);
    }
    Ok((sockets, total, latencies))
}

pub async fn run(args: &Args, ep: &Endpoint) -> Res<String> {
    let users = args.num("users", 100)? as usize;
    let devices = args.num("devices", 3)?.max(1) as usize;
    let duration = Duration::from_secs(args.num("duration", 10)?);
    let tokens: Vec<String> = match args.opt("tokens") {
        Some(path) => std::fs::read_to_string(&path)
            .map_err(|e| format!("read {path}: {e}"))?
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    if ep.target == wire::Target::Sessiond && tokens.len() < users * devices {
        return Err(format!(
            "sessiond presence needs --tokens with {} session ids (one per device), got {}",
            users * devices,
            tokens.len()
        )
        .into());
    }

    let mut per_user = Vec::with_capacity(users);
    for u in 0..users {
        let mut sockets = Vec::with_capacity(devices);
        for d in 0..devices {
            let user = format!("presence-{u}");
            let device = format!("d{d}");
            let who = Identity {
                user: &user,
                device: &device,
                token: tokens.get(u * devices + d).map(String::as_str),
            };
            let ws = wire::open(ep, Flavor::Seed, &who)
                .await
                .map_err(|e| format!("user {u} device {d}: {e}"))?;
            sockets.push(ws);
        }
        per_user.push(sockets);
    }

    let (per_user, _, _) = all_users(per_user, ep, WARMUP_ROUNDS, u64::MAX).await?;
    let cpu_before = cpu_pair(args.num("pid", 0)? as u32);
    let started_us = now_us();
    let until_us = started_us + duration.as_micros() as u64;
    let (per_user, rounds, mut latencies) = all_users(per_user, ep, u64::MAX, until_us).await?;
    let elapsed_s = (now_us() - started_us) as f64 / 1e6;
    let cpu_after = cpu_pair(args.num("pid", 0)? as u32);
    drop(per_user);
    latencies.sort_unstable();
    Ok(format!(
        "users={users} devices={devices} round_trips={rounds} seconds={elapsed_s:.3} \
         round_trips_per_s={:.0} deliveries_per_s={:.0} p50_us={} p99_us={} max_us={} server_cpu_s={:.2} client_cpu_s={:.2}",
        rounds as f64 / elapsed_s,
        (rounds * devices as u64) as f64 / elapsed_s,
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
        cpu_after.0 - cpu_before.0,
        cpu_after.1 - cpu_before.1,
    ))
}
