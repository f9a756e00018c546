//! The access line, written by hand in the exact format of the server's log subscriber.
//!
//! Why not `tracing::info!`: a quarter of a session GET's CPU went to the access line
//! (docs/benchmarks.md), most of it in the generic formatter: the timestamp's calendar
//! arithmetic on every line, each field through `fmt::Debug` and a dynamic visitor. The
//! server binary knows its subscriber's format ([`write_lines_directly`], called where logging
//! is set up), so the line is built here into a reused per-thread buffer: the date part of the
//! timestamp is computed once a second, numbers are written with `itoa`, strings that need no
//! escaping are copied as they are, and the line goes to stderr in one `write`, as the
//! subscriber's own lines do. Whether the line is wanted is still the subscriber's decision
//! (`tracing::enabled!` for target `sessiond::access` at `info`: `log.level` and `RUST_LOG`
//! filter it as before). Anything else (no direct format set: tests, embedders, a terminal with
//! colours) logs through `tracing` as before; the unit tests hold both paths to the same bytes.
//!
//! # Buffered writes
//! One `write` per request was the next cost (4 % of a forward-auth decision's CPU, in the
//! kernel, which instruction counts do not show). With [`buffer_lines`] (the server's
//! `log.access_flush_ms`, like nginx's `access_log … buffer= flush=`), lines gather in one
//! buffer that a thread of its own writes out one interval after its first line, or at once
//! when it holds [`BUFFER_BYTES`]. What that trades: an access line reaches stderr up to one interval late
//! (it carries its own timestamp), and a process killed with `kill -9` loses at most that
//! interval's lines; a clean stop writes them ([`flush`]) before its last line.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The log subscriber's line format, for [`write_lines_directly`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// `tracing_subscriber::fmt`'s default (full) format without ANSI colours.
    Full,
    /// `tracing_subscriber::fmt().json()`, default options.
    Json,
}

static DIRECT: OnceLock<LineFormat> = OnceLock::new();

/// Writes access lines straight to stderr in `format` from now on (once per process; the
/// server binary calls it where it installs a subscriber of that format writing to stderr).
pub fn write_lines_directly(format: LineFormat) {
    let _ = DIRECT.set(format);
}

/// Buffered lines are written out at once when they reach this many bytes (a few hundred
/// lines: one write of a size the kernel copies cheaply, and a bound on the memory held).
pub const BUFFER_BYTES: usize = 64 * 1024;

/// Lines waiting for the flushing thread, once [`buffer_lines`] was called.
static BUFFERED: OnceLock<Arc<Buffered>> = OnceLock::new();

/// The buffer, and the flushing thread's wake-up: it sleeps until a line arrives in an empty
/// buffer (an idle server has no timer ticking for its log), then waits one interval so the
/// lines of that interval go out in one write.
struct Buffered {
    lines: Mutex<Vec<u8>>,
    arrived: Condvar,
}

impl Buffered {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one line; writes everything out when the buffer is full.
    fn push(&self, line: &[u8]) {
        let mut lines = self.lock();
        if lines.is_empty() {
            self.arrived.notify_one();
        }
        lines.extend_from_slice(line);
        if lines.len() >= BUFFER_BYTES {
            write_out(&mut lines);
        }
    }

    /// The flushing thread's loop.
    fn run(&self, flush_every: Duration) {
        loop {
            drop(
                self.arrived
                    .wait_while(self.lock(), |lines| lines.is_empty())
                    .unwrap_or_else(PoisonError::into_inner),
            );
            std::thread::sleep(flush_every);
            write_out(&mut self.lock());
        }
    }
}

/// From now on, directly written access lines (see [`write_lines_directly`]) are buffered and
/// written `flush_every` after the first line of a batch by a thread of their own (once per
/// process; zero: a write per line, as without this call). If the thread cannot be started,
/// nothing changes (the error says why).
pub fn buffer_lines(flush_every: Duration) -> std::io::Result<()> {
    if flush_every.is_zero() || BUFFERED.get().is_some() {
        return Ok(());
    }
    let buffered = Arc::new(Buffered {
        lines: Mutex::new(Vec::with_capacity(BUFFER_BYTES)),
        arrived: Condvar::new(),
    });
    let flusher = Arc::clone(&buffered);
    std::thread::Builder::new()
        .name("sessiond-access-log".into())
        .spawn(move || flusher.run(flush_every))?;
    // Lines are buffered only once the thread that writes them runs.
    let _ = BUFFERED.set(buffered);
    Ok(())
}

/// Writes out the buffered access lines now (a clean stop calls it before its last line).
pub fn flush() {
    if let Some(buffered) = BUFFERED.get() {
        write_out(&mut buffered.lock());
    }
}

/// Writes `lines` to stderr in one call and empties them (keeping the capacity). A failed
/// write drops them, as the subscriber does with its own lines.
fn write_out(lines: &mut Vec<u8>) {
    if !lines.is_empty() {
        let _ = std::io::stderr().lock().write_all(lines);
        lines.clear();
    }
}

/// The fields of one access line (see docs/operations.md#access-log).
pub(crate) struct AccessFields<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub bytes: Option<u64>,
    pub request_id: &'a str,
    pub peer: Option<SocketAddr>,
    pub client: Option<IpAddr>,
    pub error: Option<&'a str>,
}

/// Logs one access line.
pub(crate) fn emit(fields: &AccessFields<'_>) {
    match DIRECT.get() {
        Some(format) => {
            if tracing::enabled!(target: "sessiond::access", tracing::Level::INFO) {
                // Not during a thread's teardown (no buffer then): the line is dropped, as a
                // failed write to stderr is, like the subscriber does.
                let _ = LINE.try_with(|line| {
                    let Ok(mut line) = line.try_borrow_mut() else {
                        return;
                    };
                    line.clear();
                    format_line(&mut line, *format, SystemTime::now(), fields);
                    match BUFFERED.get() {
                        Some(buffered) => buffered.push(&line),
                        None => {
                            let _ = std::io::stderr().lock().write_all(&line);
                        }
                    }
                });
            }
        }
        None => via_tracing(fields),
    }
}

/// The same line through `tracing` (whatever subscriber is installed).
fn via_tracing(f: &AccessFields<'_>) {
    tracing::info!(
        target: "sessiond::access",
        method = %f.method,
        route = f.route,
        status = f.status,
        duration_ms = f.duration_ms,
        bytes = f.bytes,
        request_id = %f.request_id,
        peer = f.peer.map(|p| p.to_string()),
        client = f.client.map(|ip| ip.to_string()),
        error = f.error,
        "request"
    );
}

thread_local! {
    /// The line being written (reused: no allocation per line once it has grown).
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    /// `YYYY-MM-DDTHH:MM:SS.` of the last second a line was written in.
    static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

fn format_line(out: &mut Vec<u8>, format: LineFormat, now: SystemTime, f: &AccessFields<'_>) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    match format {
        LineFormat::Full => {
            timestamp(out, since.as_secs(), since.subsec_micros());
            out.extend_from_slice(b"  INFO sessiond::access: request method=");
            out.extend_from_slice(f.method.as_bytes());
            out.extend_from_slice(b" route=");
            debug_str(out, f.route);
            out.extend_from_slice(b" status=");
            number(out, f.status.into());
            out.extend_from_slice(b" duration_ms=");
            debug_f64(out, f.duration_ms);
            if let Some(bytes) = f.bytes {
                out.extend_from_slice(b" bytes=");
                number(out, bytes);
            }
            out.extend_from_slice(b" request_id=");
            out.extend_from_slice(f.request_id.as_bytes());
            if let Some(peer) = f.peer {
                out.extend_from_slice(b" peer=\"");
                socket_addr(out, peer);
                out.push(b'"');
            }
            if let Some(client) = f.client {
                out.extend_from_slice(b" client=\"");
                ip_addr(out, client);
                out.push(b'"');
            }
            if let Some(error) = f.error {
                out.extend_from_slice(b" error=");
                debug_str(out, error);
            }
        }
        LineFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(out, since.as_secs(), since.subsec_micros());
            out.extend_from_slice(
                b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":",
            );
            json_str(out, f.method);
            out.extend_from_slice(b",\"route\":");
            json_str(out, f.route);
            out.extend_from_slice(b",\"status\":");
            number(out, f.status.into());
            out.extend_from_slice(b",\"duration_ms\":");
            let _ = serde_json::to_writer(&mut *out, &f.duration_ms);
            if let Some(bytes) = f.bytes {
                out.extend_from_slice(b",\"bytes\":");
                number(out, bytes);
            }
            out.extend_from_slice(b",\"request_id\":");
            json_str(out, f.request_id);
            if let Some(peer) = f.peer {
                out.extend_from_slice(b",\"peer\":\"");
                socket_addr(out, peer);
                out.push(b'"');
            }
            if let Some(client) = f.client {
                out.extend_from_slice(b",\"client\":\"");
                ip_addr(out, client);
                out.push(b'"');
            }
            if let Some(error) = f.error {
                out.extend_from_slice(b",\"error\":");
                json_str(out, error);
            }
            out.extend_from_slice(b"},\"target\":\"sessiond::access\"}");
        }
    }
    out.push(b'\n');
}

/// `{:?}` of an f64, as the full format writes it. Between 1e-4 and 1e16 that is the
/// shortest decimal that reads back as the same number, with `.0` when integral, which is
/// what serde_json (ryu) writes too, without the formatting machinery; outside (and for
/// non-finite values) `{:?}` itself.
fn debug_f64(out: &mut Vec<u8>, value: f64) {
    if (1e-4..1e16).contains(&value.abs()) {
        let _ = serde_json::to_writer(&mut *out, &value);
    } else {
        let _ = write!(out, "{value:?}");
    }
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Whether a string is written the same quoted by `{:?}` and by JSON: printable ASCII
/// without quote or backslash.
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// `{:?}` of a string (quoted, escaped), as the full format writes string fields.
fn debug_str(out: &mut Vec<u8>, s: &str) {
    if plain(s) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    if plain(s) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn ip_addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, octet.into());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            ip_addr(out, IpAddr::V4(*v4.ip()));
            out.push(b':');
            number(out, v4.port().into());
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// RFC 3339 UTC with microseconds, as the subscriber's default timer writes it.
fn timestamp(out: &mut Vec<u8>, secs: u64, micros: u32) {
    let cached = SECOND.try_with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, date_time(secs));
        }
        cached.1
    });
    out.extend_from_slice(&cached.unwrap_or_else(|_| date_time(secs)));
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros.min(999_999)).as_bytes();
    out.extend(std::iter::repeat_n(b'0', 6 - digits.len()));
    out.extend_from_slice(digits);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix time (proleptic Gregorian; years 1970..=9999).
fn date_time(secs: u64) -> [u8; 20] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut s = [0u8; 20];
    let two = |s: &mut [u8], at: usize, v: i64| {
        s[at] = b'0' + (v / 10 % 10) as u8;
        s[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut s, 0, year / 100);
    two(&mut s, 2, year % 100);
    s[4] = b'-';
    two(&mut s, 5, month);
    s[7] = b'-';
    two(&mut s, 8, day);
    s[10] = b'T';
    two(&mut s, 11, (rem / 3_600) as i64);
    s[13] = b':';
    two(&mut s, 14, (rem / 60 % 60) as i64);
    s[16] = b':';
    two(&mut s, 17, (rem % 60) as i64);
    s[19] = b'.';
    s
}

#[cfg(test)]
#[path = "access_line_tests.rs"]
mod tests;
