//! Closed-loop load generator for Durable Streams servers (`bench/streams/run`).
//!
//! One HTTP/1.1 keep-alive connection per worker (hyper's low-level client, no pool), so the
//! same lean client drives every server. Three modes, each printing one `RESULT key=value ...`
//! line on stdout for the bench script to parse:
//!
//! - `append`: C writers append fixed-size `application/octet-stream` bodies over N streams
//!   (writer w's k-th append goes to stream (w + k·C) mod N) for D seconds → appends/s, p50/p99.
//!   `--addr` may list several nodes of one cluster: writer w then appends through node w mod n.
//!   With `--json M` the streams are `application/json` and each body is M JSON objects of that
//!   size (nested values, a big integer, an exponent, escapes: what a server must validate), a
//!   bare object for M = 1, an array (a batch of M messages) otherwise.
//! - `catchup`: fills one stream to a size, then reads it from offset `-1` page by page following
//!   `Stream-Next-Offset` until `Stream-Up-To-Date`, repeated for D seconds → MB/s, page p50/p99.
//! - `sse`: K `live=sse` subscribers on one `text/plain` stream while one closed-loop writer
//!   appends timestamped bodies for D seconds; waits until every subscriber has every message →
//!   deliveries/s, delivery latency p50/p99, server RSS (VmRSS of `--pid`) before/with
//!   subscribers/peak.
//!
//! Arguments: `--help` of each mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use sessiond_bench_kit::latency::Latency;
use sessiond_bench_kit::process::CpuPair;
use sessiond_bench_kit::report::{exit_on_error, print_result};
use tokio::net::TcpStream;

type Sender = SendRequest<Full<Bytes>>;
type Res<T> = Result<T, String>;

#[derive(Parser)]
#[command(
    name = "sessiond-bench-streams-load",
    about = "Closed-loop load for Durable Streams servers"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

/// Options of every mode.
#[derive(Args)]
struct Common {
    /// The server, or several nodes of one cluster: HOST:PORT[,HOST:PORT…]
    #[arg(long, required = true, value_delimiter = ',')]
    addr: Vec<String>,
    /// Path prefix of the streams
    #[arg(long, default_value = "/v1/stream")]
    base: String,
    /// Measured seconds
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stream name prefix
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// The server's pid: its CPU µs per operation (and its RSS in `sse`) are reported
    #[arg(long, default_value_t = 0)]
    pid: u32,
}

#[derive(Subcommand)]
enum Mode {
    /// C writers append over N streams
    Append(AppendArgs),
    /// Fill one stream, then read it from the start page by page, repeatedly
    Catchup(CatchupArgs),
    /// K SSE subscribers on one stream while one writer appends
    Sse(SseArgs),
}

#[derive(Args)]
struct AppendArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent writers (C)
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Streams (N)
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Body bytes per append (per JSON message with --json)
    #[arg(long, default_value_t = 256)]
    body: usize,
    /// JSON messages per append (0: application/octet-stream)
    #[arg(long, default_value_t = 0)]
    json: usize,
    /// Create the streams first (1) or use existing ones (0)
    #[arg(long, default_value_t = 1)]
    create: u8,
}

#[derive(Args)]
struct CatchupArgs {
    #[command(flatten)]
    common: Common,
    /// Stream size in MB
    #[arg(long, default_value_t = 200.0)]
    mb: f64,
    /// Bytes per append while filling
    #[arg(long, default_value_t = 65536)]
    chunk: usize,
    /// Concurrent writers while filling
    #[arg(long, default_value_t = 4)]
    fill_writers: usize,
    /// After the fill, read only once the server (`--pid`) was idle (≤ 5 % of a core) this
    /// many seconds in a row, so the reads are not charged with background work the fill
    /// caused, such as sealing on a timer (0: read at once)
    #[arg(long, default_value_t = 0)]
    settle_idle_secs: u64,
    /// Longest wait for that idle stretch
    #[arg(long, default_value_t = 120)]
    settle_max_secs: u64,
}

#[derive(Args)]
pub(crate) struct SseArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers (K)
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Body bytes per append
    #[arg(long, default_value_t = 256)]
    body: usize,
    /// Longest wait for every subscriber to receive every append, in seconds
    #[arg(long, default_value_t = 20.0)]
    drain_timeout: f64,
}

/// Server CPU µs per operation since `before` (`n/a` without a pid).
fn cpu_us_per_op(pid: u32, before: &CpuPair, ops: u64) -> String {
    let used = CpuPair::read(pid).since(before);
    if pid == 0 || ops == 0 {
        return "n/a".into();
    }
    format!("{:.1}", used.server * 1e6 / ops as f64)
}

async fn connect(addr: &str) -> Res<Sender> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(
    addr: &str,
    method: Method,
    path: &str,
    ctype: Option<&str>,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    if let Some(ct) = ctype {
        b = b.header("content-type", ct);
    }
    b.body(Full::new(body))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

/// Longest wait for one request (a server that stops answering must not hang the run).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// [`send_once`] bounded by [`REQUEST_TIMEOUT`]; a timed-out connection is dropped.
async fn send(
    conn: &mut Option<Sender>,
    addr: &str,
    req: Request<Full<Bytes>>,
) -> Res<(u16, hyper::HeaderMap, usize)> {
    match tokio::time::timeout(REQUEST_TIMEOUT, send_once(conn, addr, req)).await {
        Ok(result) => result,
        Err(_) => {
            *conn = None;
            Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))
        }
    }
}

/// Sends one request on the connection (reconnecting first if it is closed), reads the whole
/// body and returns (status, headers, body length).
async fn send_once(
    conn: &mut Option<Sender>,
    addr: &str,
    req: Request<Full<Bytes>>,
) -> Res<(u16, hyper::HeaderMap, usize)> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(connect(addr).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    if c.ready().await.is_err() {
        *conn = Some(connect(addr).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let resp = match c.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            *conn = None;
            return Err(format!("request: {e}"));
        }
    };
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    n += d.len();
                }
            }
            Err(e) => {
                *conn = None;
                return Err(format!("body: {e}"));
            }
        }
    }
    Ok((status, parts.headers, n))
}

fn stream_path(base: &str, name: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), name)
}

fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Creates the streams `names` with PUT over `par` connections.
async fn create_streams(
    addr: &str,
    base: &str,
    names: Vec<String>,
    ctype: &'static str,
    par: usize,
) -> Res<()> {
    let names = Arc::new(Mutex::new(names));
    let mut tasks = Vec::new();
    for _ in 0..par.max(1) {
        let names = names.clone();
        let addr = addr.to_string();
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            loop {
                let name = match names.lock() {
                    Ok(mut g) => g.pop(),
                    Err(_) => None,
                };
                let Some(name) = name else {
                    return Ok::<(), String>(());
                };
                let path = stream_path(&base, &name);
                let (st, _, _) = send(
                    &mut conn,
                    &addr,
                    request(&addr, Method::PUT, &path, Some(ctype), Bytes::new()),
                )
                .await?;
                if !(200..300).contains(&st) {
                    return Err(format!("PUT {path}: status {st}"));
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("create task: {e}"))??;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------ append

/// One JSON object of `len` bytes (at least its fixed part): a state-protocol-like event.
fn json_body(len: usize) -> Bytes {
    let head = r#"{"type":"order","key":"o-1842","headers":{"operation":"upsert","txid":"7f3a"},"value":{"amount":"12.50","n":12345678901234567890123,"f":1e2,"tags":["a","b",{"k":null}],"note":"caf\u00e9 \"q\""},"pad":""#;
    let pad = len.saturating_sub(head.len() + 2);
    Bytes::from(format!("{head}{}\"}}", "x".repeat(pad)))
}

async fn run_append(a: &AppendArgs) -> Res<()> {
    // Several nodes (`--addr a,b,c`): streams are created through the first, and writer w
    // appends through node w mod n.
    let addrs = &a.common.addr;
    let addr = addrs[0].clone();
    let base = a.common.base.clone();
    let prefix = &a.common.prefix;
    let (writers, streams, body_len) = (a.writers.max(1), a.streams.max(1), a.body);
    let secs = a.common.duration;
    let create = a.create == 1;
    let json_messages = a.json;
    let json = json_messages > 0;
    let content_type = if json {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let names: Vec<String> = (0..streams).map(|i| format!("{prefix}-{i}")).collect();
    if create {
        let t = Instant::now();
        create_streams(&addr, &base, names.clone(), content_type, 16).await?;
        eprintln!(
            "created {streams} streams in {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    let paths: Arc<Vec<String>> = Arc::new(names.iter().map(|n| stream_path(&base, n)).collect());
    let body = if json_messages == 1 {
        json_body(body_len)
    } else if json {
        let one = json_body(body_len);
        let one = std::str::from_utf8(&one).map_err(|e| e.to_string())?;
        Bytes::from(format!("[{}]", vec![one; json_messages].join(",")))
    } else {
        Bytes::from(vec![b'x'; body_len])
    };
    let cpu_before = CpuPair::read(a.common.pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (paths, addr, body) = (paths.clone(), addrs[w % addrs.len()].clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Latency::new();
            let (mut ok, mut errors, mut first_err) = (0u64, 0u64, String::new());
            let mut conn = None;
            let mut k = 0usize;
            while Instant::now() < deadline {
                let path = &paths[(w + k * writers) % paths.len()];
                k += 1;
                let t0 = Instant::now();
                let req = request(&addr, Method::POST, path, Some(content_type), body.clone());
                match send(&mut conn, &addr, req).await {
                    Ok((st, _, _)) if (200..300).contains(&st) => {
                        hist.record(t0.elapsed());
                        ok += 1;
                    }
                    Ok((st, _, _)) => {
                        errors += 1;
                        if first_err.is_empty() {
                            first_err = format!("status_{st}");
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if first_err.is_empty() {
                            first_err = e;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (hist, ok, errors, first_err)
        }));
    }
    let mut hist = Latency::new();
    let (mut ok, mut errors, mut first_err) = (0, 0, String::new());
    for t in tasks {
        let (h, o, e, f) = t.await.map_err(|e| format!("writer task: {e}"))?;
        hist.merge(&h);
        ok += o;
        errors += e;
        if first_err.is_empty() {
            first_err = f;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    print_result(&[
        ("ops", ok.to_string()),
        ("secs", format!("{elapsed:.3}")),
        ("rate", format!("{:.1}", ok as f64 / elapsed)),
        ("p50_us", hist.quantile_us(0.50).to_string()),
        ("p99_us", hist.quantile_us(0.99).to_string()),
        (
            "server_cpu_us_per_op",
            cpu_us_per_op(a.common.pid, &cpu_before, ok),
        ),
        ("errors", errors.to_string()),
        ("first_error", first_err),
    ]);
    Ok(())
}

// ------------------------------------------------------------------------------------ catchup

async fn run_catchup(a: &CatchupArgs) -> Res<()> {
    let addr = a.common.addr[0].clone();
    let base = a.common.base.clone();
    let name = format!("{}-catchup", a.common.prefix);
    let (mb, chunk, fill_writers) = (a.mb, a.chunk.max(1), a.fill_writers);
    let secs = a.common.duration;
    let path = stream_path(&base, &name);
    let total_bytes = (mb * 1e6) as usize;
    let chunks = total_bytes.div_ceil(chunk);
    let size = chunks * chunk;

    create_streams(
        &addr,
        &base,
        vec![name.clone()],
        "application/octet-stream",
        1,
    )
    .await?;
    let t = Instant::now();
    let left = Arc::new(AtomicU64::new(chunks as u64));
    let body = Bytes::from(
        (0..chunk)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut tasks = Vec::new();
    for _ in 0..fill_writers.max(1) {
        let (left, addr, path, body) = (left.clone(), addr.clone(), path.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                .is_ok()
            {
                let req = request(
                    &addr,
                    Method::POST,
                    &path,
                    Some("application/octet-stream"),
                    body.clone(),
                );
                let (st, _, _) = send(&mut conn, &addr, req).await?;
                if !(200..300).contains(&st) {
                    return Err(format!("fill POST: status {st}"));
                }
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("fill task: {e}"))??;
    }
    let fill_secs = t.elapsed().as_secs_f64();
    eprintln!("filled {name}: {size} bytes in {chunks} appends, {fill_secs:.1} s");
    let (idle, limit) = (a.settle_idle_secs, a.settle_max_secs);
    let settled = match a.common.pid {
        0 => Duration::ZERO,
        _ if idle == 0 => Duration::ZERO,
        pid => {
            let (idle, limit) = (Duration::from_secs(idle), Duration::from_secs(limit));
            sessiond_bench_kit::process::settled_cpu(pid, 0.05, idle, limit).await
        }
    };
    eprintln!("server idle after {:.1} s", settled.as_secs_f64());

    let mut conn = None;
    let mut hist = Latency::new();
    let (mut bytes, mut passes, mut pages, mut short_passes) = (0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    loop {
        let mut offset = "-1".to_string();
        let mut pass_bytes = 0usize;
        loop {
            let p = format!("{path}?offset={}", pct_encode(&offset));
            let t0 = Instant::now();
            let (st, headers, n) = send(
                &mut conn,
                &addr,
                request(&addr, Method::GET, &p, None, Bytes::new()),
            )
            .await?;
            if st != 200 && st != 204 {
                return Err(format!("GET {p}: status {st}"));
            }
            hist.record(t0.elapsed());
            pages += 1;
            pass_bytes += n;
            let next = headers
                .get("stream-next-offset")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let done = headers
                .get("stream-up-to-date")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            if done {
                break;
            }
            match next {
                Some(nx) if nx != offset && n > 0 => offset = nx,
                _ => {
                    return Err(format!(
                        "GET {p}: no progress (next offset {next:?}, {n} bytes)"
                    ))
                }
            }
        }
        if pass_bytes != size {
            short_passes += 1;
        }
        bytes += pass_bytes as u64;
        passes += 1;
        if start.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    print_result(&[
        ("bytes", bytes.to_string()),
        ("passes", passes.to_string()),
        ("pages", pages.to_string()),
        ("secs", format!("{elapsed:.3}")),
        ("rate", format!("{:.1}", bytes as f64 / 1e6 / elapsed)),
        ("p50_us", hist.quantile_us(0.50).to_string()),
        ("p99_us", hist.quantile_us(0.99).to_string()),
        ("stream_bytes", size.to_string()),
        ("fill_secs", format!("{fill_secs:.2}")),
        ("settle_secs", format!("{:.1}", settled.as_secs_f64())),
        ("errors", short_passes.to_string()),
    ]);
    Ok(())
}

mod sse;
use sse::run_sse;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match &cli.mode {
        Mode::Append(a) => run_append(a).await,
        Mode::Catchup(a) => run_catchup(a).await,
        Mode::Sse(a) => run_sse(a).await,
    };
    exit_on_error("sessiond-bench-streams-load", result);
}
