//! What `/proc` says about a process: resident memory and CPU time.
//!
//! The benchmarks run the load tool and the server on the same two cores, so throughput alone
//! says little: CPU seconds per operation, read from the server's own `/proc/<pid>/stat`, is
//! the figure that survives a loaded machine. RSS growth per connection is how idle-socket and
//! SSE-subscriber costs are compared across servers.

use std::time::{Duration, Instant};

/// VmRSS of `pid` in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time (user + system, all threads, seconds) `pid` has used so far, from
/// `/proc/<pid>/stat`; `None` when it cannot be read (no pid given, process gone).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

/// CPU seconds of the server under test and of this load tool at one moment; subtract two
/// readings to say who used the cores during a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuPair {
    pub server: f64,
    pub load: f64,
}

impl CpuPair {
    /// Reads both now (0 for a process that cannot be read).
    pub fn read(server: u32) -> CpuPair {
        CpuPair {
            server: cpu_seconds(server).unwrap_or(0.0),
            load: cpu_seconds(std::process::id()).unwrap_or(0.0),
        }
    }

    /// CPU used by each side since `earlier`.
    pub fn since(&self, earlier: &CpuPair) -> CpuPair {
        CpuPair {
            server: self.server - earlier.server,
            load: self.load - earlier.load,
        }
    }
}

/// Waits until the RSS of `pid` stops moving (two readings 500 ms apart within 0.5 %), at
/// most `limit`; returns the last reading.
pub async fn settled_rss(pid: u32, limit: Duration) -> Result<u64, String> {
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

/// Waits until `pid` has been idle — at most `busy` of a core (e.g. 0.05) in every 500 ms
/// window — for `idle_for` in a row, or `limit` passed; returns how long it waited. Used
/// between a fill and a measured read, so the read is not charged with the server's
/// background work after the writes (a cold tier sealing what was just written, on a timer):
/// `idle_for` longer than such a timer's period means its pass ran. A server with no
/// background work waits `idle_for`.
pub async fn settled_cpu(pid: u32, busy: f64, idle_for: Duration, limit: Duration) -> Duration {
    let start = Instant::now();
    let window = Duration::from_millis(500);
    let Some(mut last) = cpu_seconds(pid) else {
        return Duration::ZERO;
    };
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < idle_for && start.elapsed() < limit {
        tokio::time::sleep(window).await;
        let Some(now) = cpu_seconds(pid) else {
            break;
        };
        if now - last > busy * window.as_secs_f64() {
            idle_since = Instant::now();
        }
        last = now;
    }
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).expect("own status") > 0);
        // Burn CPU until the kernel's tick-granular counter shows some (bounded: 10 s).
        let start = Instant::now();
        let mut x = 0u64;
        while cpu_seconds(me).unwrap_or(0.0) <= 0.0 && start.elapsed() < Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert!(cpu_seconds(me).expect("own stat") > 0.0);
        assert!(cpu_seconds(u32::MAX).is_none());
        let a = CpuPair::read(me);
        assert!(CpuPair::read(me).since(&a).server >= 0.0);
    }
}
