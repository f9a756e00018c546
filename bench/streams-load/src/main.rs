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
//! Arguments are `--key value` pairs; see `usage()`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Sender = SendRequest<Full<Bytes>>;
/// A failure, for the operator: whatever failed underneath, printed as a message.
type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

fn usage() -> &'static str {
    "usage: sessiond-bench-streams-load <append|catchup|sse> --addr HOST:PORT[,HOST:PORT…] [options]
  common:  --base /v1/stream  --duration SECS (5)  --prefix NAME (bench)
  append:  --writers C (1) --streams N (1) --body BYTES (256) --json M (0: octet-stream)
  catchup: --mb MEGABYTES (200) --chunk BYTES (65536) --fill-writers W (4)
  sse:     --subscribers K (1000) --body BYTES (256) --pid SERVER_PID --drain-timeout SECS (20)"
}

struct Args {
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
    fn str(&self, key: &str, default: &str) -> String {
        self.kv
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Res<T> {
        match self.kv.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: bad number {v}").into()),
        }
    }
}

/// Log-linear latency histogram (µs): 32 sub-buckets per power of two, ≈3 % resolution.
#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
}

const SUB: u32 = 32;

impl Hist {
    fn new() -> Hist {
        Hist {
            counts: vec![0; (64 * SUB) as usize],
        }
    }
    fn index(us: u64) -> usize {
        if us < u64::from(SUB) {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros(); // ≥ 5
        let mant = (us >> (exp - 5)) & u64::from(SUB - 1);
        ((exp - 4) * SUB) as usize + mant as usize
    }
    fn lower(idx: usize) -> u64 {
        let idx = idx as u64;
        let sub = u64::from(SUB);
        if idx < sub {
            return idx;
        }
        let exp = idx / sub + 4;
        let mant = idx % sub;
        (sub + mant) << (exp - 5)
    }
    fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = Hist::index(us).min(self.counts.len() - 1);
        self.counts[i] += 1;
    }
    fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }
    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// Percentile in µs (lower edge of the bucket; 0 when empty).
    fn pct(&self, p: f64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Hist::lower(i);
            }
        }
        0
    }
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
            Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()).into())
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
            return Err(format!("request: {e}").into());
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
                return Err(format!("body: {e}").into());
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
                    return Ok::<(), Error>(());
                };
                let path = stream_path(&base, &name);
                let (st, _, _) = send(
                    &mut conn,
                    &addr,
                    request(&addr, Method::PUT, &path, Some(ctype), Bytes::new()),
                )
                .await?;
                if !(200..300).contains(&st) {
                    return Err(format!("PUT {path}: status {st}").into());
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("create task: {e}"))??;
    }
    Ok(())
}

fn print_result(pairs: &[(&str, String)]) {
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {}", line.join(" "));
}

// ------------------------------------------------------------------------------------ append

/// One JSON object of `len` bytes (at least its fixed part): a state-protocol-like event.
fn json_body(len: usize) -> Bytes {
    let head = r#"{"type":"order","key":"o-1842","headers":{"operation":"upsert","txid":"7f3a"},"value":{"amount":"12.50","n":12345678901234567890123,"f":1e2,"tags":["a","b",{"k":null}],"note":"caf\u00e9 \"q\""},"pad":""#;
    let pad = len.saturating_sub(head.len() + 2);
    Bytes::from(format!("{head}{}\"}}", "x".repeat(pad)))
}

async fn run_append(a: &Args) -> Res<()> {
    // Several nodes (`--addr a,b,c`): streams are created through the first, and writer w
    // appends through node w mod n.
    let addrs: Vec<String> = a.str("addr", "").split(',').map(str::to_string).collect();
    let addr = addrs[0].clone();
    let base = a.str("base", "/v1/stream");
    let prefix = a.str("prefix", "bench");
    let writers: usize = a.num("writers", 1)?;
    let streams: usize = a.num("streams", 1)?;
    let secs: f64 = a.num("duration", 5.0)?;
    let body_len: usize = a.num("body", 256)?;
    let create = a.str("create", "1") == "1";
    let json_messages: usize = a.num("json", 0)?;
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
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (paths, addr, body) = (paths.clone(), addrs[w % addrs.len()].clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Hist::new();
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
                            first_err = e.to_string();
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (hist, ok, errors, first_err)
        }));
    }
    let mut hist = Hist::new();
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
        ("p50_us", hist.pct(50.0).to_string()),
        ("p99_us", hist.pct(99.0).to_string()),
        ("errors", errors.to_string()),
        ("first_error", first_err.replace(' ', "_")),
    ]);
    Ok(())
}

// ------------------------------------------------------------------------------------ catchup

async fn run_catchup(a: &Args) -> Res<()> {
    let addr = a.str("addr", "");
    let base = a.str("base", "/v1/stream");
    let name = a.str("prefix", "bench") + "-catchup";
    let mb: f64 = a.num("mb", 200.0)?;
    let chunk: usize = a.num("chunk", 65536)?;
    let fill_writers: usize = a.num("fill-writers", 4)?;
    let secs: f64 = a.num("duration", 5.0)?;
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
                    return Err(format!("fill POST: status {st}").into());
                }
            }
            Ok::<(), Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("fill task: {e}"))??;
    }
    let fill_secs = t.elapsed().as_secs_f64();
    eprintln!("filled {name}: {size} bytes in {chunks} appends, {fill_secs:.1} s");

    let mut conn = None;
    let mut hist = Hist::new();
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
                return Err(format!("GET {p}: status {st}").into());
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
                    return Err(
                        format!("GET {p}: no progress (next offset {next:?}, {n} bytes)").into(),
                    )
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
        ("p50_us", hist.pct(50.0).to_string()),
        ("p99_us", hist.pct(99.0).to_string()),
        ("stream_bytes", size.to_string()),
        ("fill_secs", format!("{fill_secs:.2}")),
        ("errors", short_passes.to_string()),
    ]);
    Ok(())
}

mod sse;
use sse::run_sse;

#[tokio::main]
async fn main() {
    let res = async {
        let a = Args::parse()?;
        if a.str("addr", "").is_empty() {
            return Err(format!("--addr is required\n{}", usage()).into());
        }
        match a.mode.as_str() {
            "append" => run_append(&a).await,
            "catchup" => run_catchup(&a).await,
            "sse" => run_sse(&a).await,
            m => Err(format!("unknown mode {m}\n{}", usage()).into()),
        }
    }
    .await;
    if let Err(e) = res {
        eprintln!("sessiond-bench-streams-load: {e}");
        std::process::exit(1);
    }
}
