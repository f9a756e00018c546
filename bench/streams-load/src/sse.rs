//! `sse` mode: K subscribers on one stream while a writer appends; deliveries/s, latency and
//! the server's RSS.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;

use crate::*;

fn rss_kb(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Per-subscriber SSE parser state: whole records are `body` bytes whose first 16 are the send
/// time in µs since `epoch`.
struct SseParser {
    line: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
    records: Vec<u8>,
    next_offset: Option<String>,
}

impl SseParser {
    fn feed(
        &mut self,
        chunk: &[u8],
        body: usize,
        epoch: Instant,
        hist: &mut Hist,
        got: &AtomicU64,
    ) {
        let now = Instant::now();
        for &b in chunk {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = std::mem::take(&mut self.line);
            if line.is_empty() {
                self.dispatch(body, epoch, now, hist, got);
            } else if let Some(v) = line.strip_prefix(b"event:") {
                self.event = v.strip_prefix(b" ").unwrap_or(v).to_vec();
            } else if let Some(v) = line.strip_prefix(b"data:") {
                self.data
                    .extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
            }
        }
    }
    fn dispatch(
        &mut self,
        body: usize,
        epoch: Instant,
        now: Instant,
        hist: &mut Hist,
        got: &AtomicU64,
    ) {
        let data = std::mem::take(&mut self.data);
        let event = std::mem::take(&mut self.event);
        if event == b"data" {
            self.records.extend_from_slice(&data);
            let mut n = 0;
            let mut at = 0;
            while self.records.len() - at >= body {
                let ts = std::str::from_utf8(&self.records[at..at + 16])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(ts) = ts {
                    let sent = epoch + Duration::from_micros(ts);
                    hist.record(now.saturating_duration_since(sent));
                }
                at += body;
                n += 1;
            }
            self.records.drain(..at);
            got.fetch_add(n, Ordering::Relaxed);
        } else if event == b"control" {
            let s = String::from_utf8_lossy(&data);
            if let Some(i) = s.find("\"streamNextOffset\"") {
                let rest = &s[i + 18..];
                if let Some(q1) = rest.find('"') {
                    if let Some(q2) = rest[q1 + 1..].find('"') {
                        self.next_offset = Some(rest[q1 + 1..q1 + 1 + q2].to_string());
                    }
                }
            }
        }
    }
}

pub(crate) async fn run_sse(a: &Args) -> Res<()> {
    let addr = a.str("addr", "");
    let base = a.str("base", "/v1/stream");
    let name = a.str("prefix", "bench") + "-sse";
    let subs: usize = a.num("subscribers", 1000)?;
    let secs: f64 = a.num("duration", 5.0)?;
    let body_len: usize = a.num("body", 256)?;
    let pid: u32 = a.num("pid", 0)?;
    let drain_timeout: f64 = a.num("drain-timeout", 20.0)?;
    if body_len < 17 {
        return Err("--body must be ≥ 17".into());
    }
    let path = stream_path(&base, &name);
    create_streams(&addr, &base, vec![name.clone()], "text/plain", 1).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kb(pid);

    let epoch = Instant::now();
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..subs).map(|_| AtomicU64::new(0)).collect());
    let first_err: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let mut tasks = Vec::new();
    for i in 0..subs {
        let (addr, path) = (addr.clone(), path.clone());
        let (connected, failed, reconnects, stop, counters, first_err) = (
            connected.clone(),
            failed.clone(),
            reconnects.clone(),
            stop.clone(),
            counters.clone(),
            first_err.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Hist::new();
            let mut parser = SseParser {
                line: Vec::new(),
                event: Vec::new(),
                data: Vec::new(),
                records: Vec::new(),
                next_offset: None,
            };
            let mut first = true;
            let note = |e: String| {
                if let Ok(mut g) = first_err.lock() {
                    if g.is_empty() {
                        *g = e;
                    }
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let offset = parser.next_offset.clone().unwrap_or_else(|| "-1".into());
                parser.records.clear();
                let p = format!("{path}?offset={}&live=sse", pct_encode(&offset));
                let mut conn = match connect(&addr).await {
                    Ok(c) => c,
                    Err(e) => {
                        note(e.to_string());
                        if first {
                            failed.fetch_add(1, Ordering::Relaxed);
                            return hist;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let resp = match conn
                    .send_request(request(&addr, Method::GET, &p, None, Bytes::new()))
                    .await
                {
                    Ok(r) if r.status().as_u16() == 200 => r,
                    Ok(r) => {
                        note(format!("sse status {}", r.status().as_u16()));
                        if first {
                            failed.fetch_add(1, Ordering::Relaxed);
                            return hist;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => {
                        note(format!("sse request: {e}"));
                        if first {
                            failed.fetch_add(1, Ordering::Relaxed);
                            return hist;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if first {
                    connected.fetch_add(1, Ordering::Relaxed);
                    first = false;
                } else {
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
                let mut body = resp.into_body();
                loop {
                    let frame = tokio::select! {
                        f = body.frame() => f,
                        () = tokio::time::sleep(Duration::from_millis(200)) => {
                            if stop.load(Ordering::Relaxed) { return hist; }
                            continue;
                        }
                    };
                    match frame {
                        Some(Ok(f)) => {
                            if let Some(d) = f.data_ref() {
                                parser.feed(d, body_len, epoch, &mut hist, &counters[i]);
                            }
                        }
                        _ => break, // closed by the server: resume from the last control offset
                    }
                }
            }
            hist
        }));
    }
    let t = Instant::now();
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < subs as u64
        && t.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n_conn = connected.load(Ordering::Relaxed);
    eprintln!(
        "{n_conn} of {subs} SSE subscribers connected in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_subs = rss_kb(pid);

    // RSS sampler.
    let peak = Arc::new(AtomicU64::new(rss_subs));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // One closed-loop writer.
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut conn = None;
    let (mut appended, mut errors) = (0u64, 0u64);
    let filler = vec![b'y'; body_len - 16];
    while Instant::now() < deadline {
        let ts = epoch.elapsed().as_micros();
        let mut b = format!("{ts:016}").into_bytes();
        b.extend_from_slice(&filler);
        match send(
            &mut conn,
            &addr,
            request(
                &addr,
                Method::POST,
                &path,
                Some("text/plain"),
                Bytes::from(b),
            ),
        )
        .await
        {
            Ok((st, _, _)) if (200..300).contains(&st) => appended += 1,
            _ => errors += 1,
        }
    }
    let write_secs = start.elapsed().as_secs_f64();
    let expected = appended * n_conn;
    let drain_deadline = Instant::now() + Duration::from_secs_f64(drain_timeout);
    let delivered = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    while delivered() < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let got = delivered();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let rss_peak = peak.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut hist = Hist::new();
    // Subscribers notice `stop` within 200 ms; one that never connected (a server that stopped
    // accepting) is abandoned when the shared deadline passes.
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    for t in tasks {
        if let Ok(Ok(h)) = tokio::time::timeout_at(join_deadline, t).await {
            hist.merge(&h);
        }
    }
    let fe = first_err.lock().map(|g| g.clone()).unwrap_or_default();
    print_result(&[
        ("subscribers", n_conn.to_string()),
        ("appended", appended.to_string()),
        (
            "append_rate",
            format!("{:.1}", appended as f64 / write_secs),
        ),
        ("delivered", got.to_string()),
        ("expected", expected.to_string()),
        ("secs", format!("{elapsed:.3}")),
        ("rate", format!("{:.1}", got as f64 / elapsed)),
        ("p50_us", hist.pct(50.0).to_string()),
        ("p99_us", hist.pct(99.0).to_string()),
        ("rss_before_kb", rss_before.to_string()),
        ("rss_subs_kb", rss_subs.to_string()),
        ("rss_peak_kb", rss_peak.to_string()),
        ("reconnects", reconnects.load(Ordering::Relaxed).to_string()),
        ("missing", expected.saturating_sub(got).to_string()),
        (
            "errors",
            (errors + failed.load(Ordering::Relaxed)).to_string(),
        ),
        ("first_error", fe.replace(' ', "_")),
    ]);
    Ok(())
}
