//! `broadcast`: fan-out of one channel to K sockets.
//!
//! K receiver sockets subscribe to one channel (sessiond v1 `room:…` through a service key;
//! a Socket.IO room) and one publisher socket, subscribed too, publishes messages whose `data`
//! is a JSON object of exactly `--body` bytes carrying its sequence number and send time. The
//! publisher keeps at most W messages *not yet received by every receiver* (a ring of
//! per-message receipt counters; the receipt that completes a message returns its permit), so
//! neither server is pushed into unbounded queueing and the figure is a sustainable rate.
//!
//! Warm-up messages go first and are waited for, which also drains what subscribing produced
//! (sessiond's presence diffs). Then messages are published for `--duration` seconds; the rate
//! is deliveries of those messages over the time from the first send to the last completion,
//! and latency is receive time minus send time of each delivery (one clock, one process).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::wire::{self, Endpoint, Flavor, Identity, Target, Ws};
use crate::{cpu_pair, now_us, quantile, Args, Error, Res};

/// Receipt counters, indexed by sequence number modulo this (≫ the in-flight bound).
const RING: usize = 1 << 16;
/// Sequence number of the last message: receivers stop on it.
const END_SEQ: u64 = 999_999_999_999;

struct Shared {
    receivers: u32,
    counts: Vec<AtomicU32>,
    permits: Semaphore,
    /// First sequence number whose deliveries are measured.
    measured_from: u64,
    /// Time (µs) the last measured message was fully delivered.
    last_complete_us: AtomicU64,
}

impl Shared {
    fn received(&self, seq: u64) {
        let slot = &self.counts[(seq as usize) % RING];
        if slot.fetch_add(1, Ordering::AcqRel) + 1 == self.receivers {
            slot.store(0, Ordering::Release);
            if seq >= self.measured_from {
                self.last_complete_us.fetch_max(now_us(), Ordering::AcqRel);
            }
            self.permits.add_permits(1);
        }
    }
}

/// The `data` object of message `seq`, padded to `body` bytes.
fn payload(seq: u64, body: usize) -> String {
    let bare = format!(r#"{{"seq":{seq},"t":{},"pad":""}}"#, now_us());
    let pad = body.saturating_sub(bare.len());
    format!("{}{}\"}}", &bare[..bare.len() - 2], "x".repeat(pad))
}

/// Runs one receiver after it subscribed: records latencies until the end message.
async fn receive(mut ws: Ws, shared: Arc<Shared>) -> Res<Vec<u32>> {
    let mut latencies = Vec::new();
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by server: {frame:?}").into())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}").into()),
            None => return Err("connection ended".into()),
        };
        let text = text.as_str();
        let Some(seq) = wire::number_after(text, "\"seq\":") else {
            if text == "2" {
                wire::send(&mut ws, "3".to_string()).await?;
            }
            continue;
        };
        if seq == END_SEQ {
            return Ok(latencies);
        }
        if seq >= shared.measured_from {
            let sent = wire::number_after(text, "\"t\":").unwrap_or(0);
            latencies.push(now_us().saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
        }
        shared.received(seq);
    }
}

/// Opens and subscribes one socket.
async fn subscribed(ep: &Endpoint, user: &str, channel: &str) -> Res<Ws> {
    let who = Identity {
        user,
        device: "d0",
        token: None,
    };
    let mut ws = wire::open(ep, Flavor::Channels, &who).await?;
    let (request, is_reply) = wire::subscribe_frame(ep.target, channel);
    wire::send(&mut ws, request).await?;
    wire::wait_for(&mut ws, is_reply).await?;
    Ok(ws)
}

/// Publishes while permits allow, until `until` (µs) or `count` messages; keeps reading the
/// publisher's own socket (its copy of each message, replies, pings).
async fn publish(
    ws: &mut Ws,
    shared: &Shared,
    target: Target,
    channel: &str,
    body: usize,
    next_seq: &mut u64,
    stop: impl Fn(u64) -> bool,
) -> Res<()> {
    while !stop(*next_seq) {
        tokio::select! {
            permit = shared.permits.acquire() => {
                permit.map_err(|e| e.to_string())?.forget();
                let data = payload(*next_seq, body);
                wire::send(ws, wire::publish_frame(target, channel, &data, *next_seq)).await?;
                *next_seq += 1;
            }
            inbound = ws.next() => drain_one(ws, inbound).await?,
        }
    }
    Ok(())
}

/// Handles one frame arriving on the publisher's socket.
async fn drain_one(
    ws: &mut Ws,
    inbound: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Res<()> {
    match inbound {
        Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
            wire::send(ws, "3".to_string()).await
        }
        Some(Ok(Message::Close(frame))) => {
            Err(format!("publisher closed by server: {frame:?}").into())
        }
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(format!("publisher read: {e}").into()),
        None => Err("publisher connection ended".into()),
    }
}

/// Waits (reading the publisher socket) until every message sent so far is fully delivered.
async fn drain(ws: &mut Ws, shared: &Shared, inflight: u32, limit: Duration) -> Res<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            all = shared.permits.acquire_many(inflight) => {
                drop(all.map_err(|e| e.to_string())?);
                return Ok(());
            }
            inbound = ws.next() => drain_one(ws, inbound).await?,
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "messages still not delivered to every receiver after {} s",
                    limit.as_secs()
                ).into());
            }
        }
    }
}

pub async fn run(args: &Args, ep: &Endpoint) -> Res<String> {
    let receivers = args.num("subscribers", 1000)? as u32;
    let duration = Duration::from_secs(args.num("duration", 10)?);
    let inflight = args.num("inflight", 32)?.clamp(1, (RING / 2) as u64) as u32;
    let body = args.num("body", 100)? as usize;
    let warmup = args.num("warmup", 200)?;
    let concurrency = args.num("connect-concurrency", 128)? as usize;
    let channel = args.str("channel", "room:bench");
    let shared = Arc::new(Shared {
        receivers,
        counts: (0..RING).map(|_| AtomicU32::new(0)).collect(),
        permits: Semaphore::new(inflight as usize),
        measured_from: warmup,
        last_complete_us: AtomicU64::new(0),
    });

    // Several nodes (`--addr a,b,c`): receiver i connects to node i mod n, the publisher to
    // the first; deliveries to receivers of the other nodes are cross-node.
    let eps: Vec<Endpoint> = ep
        .addr
        .split(',')
        .map(|addr| Endpoint {
            addr: addr.to_string(),
            ..ep.clone()
        })
        .collect();
    let nodes = eps.len();
    let ep = &eps[0];
    let connect = Arc::new(Semaphore::new(concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Res<()>>();
    let mut handles = Vec::with_capacity(receivers as usize);
    for i in 0..receivers {
        let (ep, channel, shared, connect, ready) = (
            eps[i as usize % nodes].clone(),
            channel.clone(),
            shared.clone(),
            connect.clone(),
            ready_tx.clone(),
        );
        handles.push(tokio::spawn(async move {
            let permit = connect.acquire_owned().await.map_err(|e| e.to_string())?;
            let ws = match subscribed(&ep, &format!("bench-r{i}"), &channel).await {
                Ok(ws) => ws,
                Err(e) => {
                    let _ = ready.send(Err(format!("receiver {i}: {e}").into()));
                    return Err(e);
                }
            };
            drop(permit);
            let _ = ready.send(Ok(()));
            receive(ws, shared)
                .await
                .map_err(|e| Error::from(format!("receiver {i}: {e}")))
        }));
    }
    drop(ready_tx);
    for _ in 0..receivers {
        match tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Err("receivers ended before subscribing".into()),
            Err(_) => return Err("receivers not subscribed after 120 s".into()),
        }
    }
    let mut publisher = subscribed(ep, "bench-pub", &channel).await?;

    let mut seq = 0u64;
    let (target, limit) = (ep.target, Duration::from_secs(60));
    publish(
        &mut publisher,
        &shared,
        target,
        &channel,
        body,
        &mut seq,
        |s| s >= warmup,
    )
    .await?;
    drain(&mut publisher, &shared, inflight, limit).await?;

    let pid = args.num("pid", 0)? as u32;
    // Markers on stderr let a script take its own readings (e.g. Redis counters) around exactly
    // the measured window.
    eprintln!("MEASURE start");
    let cpu_before = cpu_pair(pid);
    let started_us = now_us();
    let until_us = started_us + duration.as_micros() as u64;
    let stop = |_: u64| now_us() >= until_us;
    publish(
        &mut publisher,
        &shared,
        target,
        &channel,
        body,
        &mut seq,
        stop,
    )
    .await?;
    drain(&mut publisher, &shared, inflight, limit).await?;
    let cpu_after = cpu_pair(pid);
    eprintln!("MEASURE end");
    let measured = seq - warmup;
    let elapsed_us = shared
        .last_complete_us
        .load(Ordering::Acquire)
        .saturating_sub(started_us)
        .max(1);
    let end = wire::publish_frame(target, &channel, &format!(r#"{{"seq":{END_SEQ}}}"#), seq);
    wire::send(&mut publisher, end).await?;

    let started = Instant::now();
    let mut latencies = Vec::with_capacity((measured * u64::from(receivers)) as usize);
    let mut remote = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let left = Duration::from_secs(30).saturating_sub(started.elapsed());
        let part = tokio::time::timeout(left, handle)
            .await
            .map_err(|_| "receivers did not get the end message within 30 s".to_string())?
            .map_err(|e| format!("receiver task: {e}"))??;
        if i % nodes != 0 {
            remote.extend_from_slice(&part);
        }
        latencies.extend(part);
    }
    latencies.sort_unstable();
    remote.sort_unstable();
    let deliveries = measured * u64::from(receivers);
    Ok(format!(
        "subscribers={receivers} messages={measured} deliveries={deliveries} \
         recorded={} seconds={:.3} deliveries_per_s={:.0} p50_us={} p99_us={} max_us={} \
         inflight={inflight} body={body} server_cpu_s={:.2} client_cpu_s={:.2} nodes={nodes} \
         remote_p50_us={} remote_p99_us={}",
        latencies.len(),
        elapsed_us as f64 / 1e6,
        deliveries as f64 / (elapsed_us as f64 / 1e6),
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0),
        cpu_after.0 - cpu_before.0,
        cpu_after.1 - cpu_before.1,
        quantile(&remote, 0.50),
        quantile(&remote, 0.99),
    ))
}
