//! A private S3-compatible server for tests (feature `testing`): `moto_server` (PyPI
//! `moto[server]`, installed by `scripts/test`) on a free loopback port, killed on drop.
//!
//! Why a real server: the S3 path of the cold tier must be tested through the real
//! `object_store` client against something that speaks S3, not a mock of the client. This is
//! test support: it panics with a clear message instead of returning errors.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many ports to try (another process may grab a freed port).
const START_ATTEMPTS: usize = 5;

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    port: u16,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot bind a loopback port for moto_server: {e}"),
    }
}

impl Moto {
    /// Starts a server and waits until it accepts connections (up to 30 s).
    pub fn start() -> Moto {
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start `moto_server` ({e}): S3 tests need it; install it with \
                         `pip install 'moto[server]'` (scripts/test does)"
                    )
                });
            let mut moto = Moto { child, port };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if matches!(moto.child.try_wait(), Ok(Some(_))) {
                    break; // exited (port taken?): try another port
                }
                if moto.request("GET", "/").is_some() {
                    return moto;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("moto_server did not start after {START_ATTEMPTS} attempts");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto does not check signatures: a plain path-style PUT does it).
    pub fn create_bucket(&self, bucket: &str) {
        match self.request("PUT", &format!("/{bucket}")) {
            Some((status, _)) if (200..300).contains(&status) => {}
            other => panic!("creating bucket {bucket} on moto: {other:?}"),
        }
    }

    /// Keys in `bucket` under `prefix` (a ListObjectsV2 call; the raw XML is searched).
    pub fn list(&self, bucket: &str, prefix: &str) -> String {
        match self.request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}")) {
            Some((200, body)) => body,
            other => panic!("listing bucket {bucket} on moto: {other:?}"),
        }
    }

    /// One HTTP/1.1 request without a body; `None` when the server does not answer.
    fn request(&self, method: &str, target: &str) -> Option<(u16, String)> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        );
        conn.write_all(req.as_bytes()).ok()?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    }
}
