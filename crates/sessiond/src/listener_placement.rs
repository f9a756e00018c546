//! Live reads on threads of their own.
//!
//! When one append wakes a thousand Durable Streams subscribers, a thousand connection tasks
//! become ready at once. On the runtime that also serves writes, the writer's next request
//! becomes ready behind all of them (tokio runs ready tasks in turn), so every append waits
//! for a whole fan-out round before it is even read: the writer's rate falls to one append
//! per round, and every round sends one event per append to every reader. Serving live reads
//! on their own threads decouples the two: writes keep their pace, and a reader that is woken
//! late sends whatever arrived since its last event in one event (a lagging reader coalesces
//! appends instead of holding writers back). Electric's durable-streams server does the same
//! with dedicated threads for its live subscribers.
//!
//! A connection is placed once, when it is accepted: its first bytes are *peeked* (the kernel
//! keeps them for hyper, which parses the request as before) and a `GET` whose request target
//! has a `live=` query parameter (`live=sse`, `live=long-poll`) is served on the live runtime;
//! everything else stays where it was accepted. Placement only decides which threads do the
//! work: a keep-alive connection stays where its first request put it, and every request on it
//! is served the same way on either runtime (behind a proxy that reuses connections for
//! mixed requests, placement is simply less precise). A client that sends nothing within
//! [`PEEK_WAIT`] is served on the accepting runtime.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::{Handle, Runtime};

/// How long placement waits for a new connection's first bytes before it serves the
/// connection where it was accepted (a browser's pre-connected socket may stay silent).
pub(crate) const PEEK_WAIT: Duration = Duration::from_millis(50);

/// How much of a request is peeked: the request line's start, which names the target.
const PEEK_BYTES: usize = 512;

/// The runtime that serves live reads, if the configuration asks for one. Dropping it stops
/// its threads without waiting (the listener has waited for its connections already, or has
/// given up on them after the shutdown grace); a `Runtime` dropped in async code panics.
pub(crate) struct LiveRuntime {
    runtime: Option<Runtime>,
}

impl LiveRuntime {
    /// `threads` workers for live reads (0: none; live reads are served with everything else),
    /// `nice` steps below the rest of the server (see [`lower_priority`]).
    pub(crate) fn start(threads: usize, nice: u8) -> std::io::Result<LiveRuntime> {
        if threads == 0 {
            return Ok(LiveRuntime::none());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("sessiond-live")
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()?;
        Ok(LiveRuntime {
            runtime: Some(runtime),
        })
    }

    /// No live runtime: live reads are served with everything else.
    pub(crate) fn none() -> LiveRuntime {
        LiveRuntime { runtime: None }
    }

    pub(crate) fn handle(&self) -> Option<&Handle> {
        self.runtime.as_ref().map(Runtime::handle)
    }
}

impl Drop for LiveRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's CPU priority by `nice` steps (Linux: the nice value is per
/// thread; elsewhere nothing changes).
///
/// Why: on a busy machine every thread competes for the cores, and an append's way through the
/// server is several hand-offs between threads (request, writer, answer), each waiting for a
/// core. With the fan-out threads at the same priority, each hand-off waited behind a fan-out
/// round and no append could land while a round ran; a lower priority lets the hand-offs run
/// first, so appends keep coming and the readers behind send several in one event. Measured
/// in docs/benchmarks.md ("SSE fan-out: live reads on their own threads"). Lowering needs no
/// privilege; a reader's delivery waits longer when the cores are saturated.
fn lower_priority(nice: u8) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        let lowered = current.saturating_add(i32::from(nice)).min(19);
        if let Err(error) = rustix::process::setpriority_process(Some(tid), lowered) {
            tracing::warn!(%error, "cannot lower the priority of a live-read thread");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The default number of live-read threads: half the machine's cores, at least one.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|cores| cores.get() / 2)
        .unwrap_or(1)
        .max(1)
}

/// Whether the connection's first request is a live read (see the module docs). Waits at most
/// [`PEEK_WAIT`] for the first bytes; consumes nothing.
pub(crate) async fn opens_live_read(tcp: &TcpStream) -> bool {
    let mut head = [0u8; PEEK_BYTES];
    match tokio::time::timeout(PEEK_WAIT, tcp.peek(&mut head)).await {
        Ok(Ok(n)) => is_live_read(&head[..n]),
        _ => false,
    }
}

/// A request head (or its start) whose request line is `GET <target>` with a `live`
/// parameter in the target's query.
fn is_live_read(head: &[u8]) -> bool {
    let Some(rest) = head.strip_prefix(b"GET ") else {
        return false;
    };
    let target = rest
        .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let Some(query_at) = target.iter().position(|&b| b == b'?') else {
        return false;
    };
    target[query_at + 1..]
        .split(|&b| b == b'&')
        .any(|pair| pair.starts_with(b"live="))
}

#[cfg(test)]
mod tests {
    use super::is_live_read;

    #[test]
    fn only_a_get_with_a_live_parameter_is_a_live_read() {
        for head in [
            &b"GET /v1/stream/a?offset=-1&live=sse HTTP/1.1\r\nhost: x\r\n\r\n"[..],
            b"GET /v1/stream/a/b?live=long-poll&offset=0_0 HTTP/1.1\r\n",
            b"GET /v1/stream/a?live=sse",
        ] {
            assert!(is_live_read(head), "{}", String::from_utf8_lossy(head));
        }
        for head in [
            &b"POST /v1/stream/a?live=sse HTTP/1.1\r\n"[..],
            b"GET /v1/stream/a?offset=-1 HTTP/1.1\r\nx-live=sse: 1\r\n",
            b"GET /v1/stream/a?notlive=sse HTTP/1.1\r\n",
            b"GET /v1/stream/live=sse HTTP/1.1\r\n",
            b"GET ",
            b"",
        ] {
            assert!(!is_live_read(head), "{}", String::from_utf8_lossy(head));
        }
    }
}
