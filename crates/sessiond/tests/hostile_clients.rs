//! Hostile and careless clients against the real listener, over raw TCP: clients that write
//! a whole over-limit body before reading, slow heads and bodies (slowloris), idle
//! keep-alive connections, too many connections, oversized heads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use sessiond::config::{Config, EngineKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(15);

/// Reads until the server closes (or the wait is over); returns what arrived as text.
async fn read_all(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!(
                "read failed after {} bytes ({e}): {}",
                out.len(),
                String::from_utf8_lossy(&out)
            ),
            Err(_) => panic!("no EOF within {WAIT:?}: {}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one response head + `Content-Length` body, leaving the connection open.
async fn read_response(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text;
            }
        }
        let n = timeout(WAIT, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

/// Whether the server has closed `tcp` (EOF or reset), without blocking.
fn is_closed(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tcp.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.addr).await.unwrap()
}

fn head(method: &str, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}\r\n")
}

/// Asserts a complete `status` response with a JSON error body.
fn assert_json_error(response: &str, status: u16, context: &str) {
    assert!(
        response.starts_with(&format!("HTTP/1.1 {status} ")),
        "{context}: {response}"
    );
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| {
        panic!("{context}: body is not JSON ({e}): {body}");
    });
    assert!(json["error"]["code"].is_string(), "{context}: {json}");
}

#[tokio::test]
async fn over_limit_bodies_written_before_reading_get_a_413() {
    let server = TestServer::start(EngineKind::Memory, |c: &mut Config| {
        c.http.max_body_bytes = 64 * 1024;
        c.streams.max_append_bytes = 256 * 1024;
    })
    .await;
    let body = vec![b'x'; 8 * 1024 * 1024];
    // Declared length: the 413 comes from Content-Length, the client writes all 8 MiB anyway.
    for path in ["/v1/sessions", "/v1/stream/big"] {
        let mut tcp = connect(&server).await;
        let method = if path == "/v1/sessions" {
            "POST"
        } else {
            "PUT"
        };
        let request = head(method, path, &format!("Content-Length: {}\r\n", body.len()));
        tcp.write_all(request.as_bytes()).await.unwrap();
        timeout(WAIT, tcp.write_all(&body))
            .await
            .expect("the server drains the body")
            .unwrap();
        let response = read_all(&mut tcp).await;
        assert_json_error(&response, 413, path);
    }
    // Chunked: refused once the limit is crossed, then drained the same way.
    for path in ["/v1/sessions", "/v1/stream/big-chunked"] {
        let mut tcp = connect(&server).await;
        let method = if path == "/v1/sessions" {
            "POST"
        } else {
            "PUT"
        };
        let request = head(method, path, "Transfer-Encoding: chunked\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let write = async {
            for chunk in body.chunks(64 * 1024) {
                tcp.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                tcp.write_all(chunk).await?;
                tcp.write_all(b"\r\n").await?;
            }
            tcp.write_all(b"0\r\n\r\n").await
        };
        timeout(WAIT, write)
            .await
            .expect("the server drains the body")
            .unwrap();
        let response = read_all(&mut tcp).await;
        assert_json_error(&response, 413, path);
    }
    // The server is fine afterwards, and bodies under the limit still pass.
    let (status, _) = common::json(
        server
            .put("/v1/stream/small")
            .header("content-type", "application/octet-stream")
            .body(vec![b'y'; 100 * 1024]),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn slow_heads_are_closed_while_normal_requests_succeed() {
    let header_timeout = Duration::from_millis(1500);
    let server = TestServer::start(EngineKind::Memory, |c: &mut Config| {
        c.http.header_timeout_ms = header_timeout.as_millis() as u64;
    })
    .await;
    let opened = Instant::now();
    let mut slow = Vec::new();
    for i in 0..64 {
        let mut tcp = connect(&server).await;
        let partial = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: ");
        tcp.write_all(partial.as_bytes()).await.unwrap();
        slow.push(tcp);
    }
    // A silent connection (no byte at all) counts as a slow head too.
    slow.push(connect(&server).await);
    for _ in 0..20 {
        let res = server.get("/healthz").send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    if opened.elapsed() < header_timeout {
        assert!(
            slow.iter().all(|tcp| !is_closed(tcp)),
            "slow heads closed before their timeout"
        );
    }
    let deadline = Instant::now() + WAIT;
    while !slow.iter().all(is_closed) {
        assert!(Instant::now() < deadline, "slow heads still open");
        // Keep dribbling header bytes: trickling does not extend the head's deadline.
        for tcp in &mut slow {
            let _ = tcp.try_write(b"a");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(opened.elapsed() >= header_timeout);
    let res = server.get("/healthz").send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn slow_bodies_get_a_408_and_idle_connections_are_closed() {
    let idle = Duration::from_millis(800);
    let server = TestServer::start(EngineKind::Memory, |c: &mut Config| {
        c.http.body_timeout_ms = 500;
        c.http.idle_timeout_ms = idle.as_millis() as u64;
    })
    .await;
    // A body that stops halfway.
    let mut tcp = connect(&server).await;
    let request = head("POST", "/v1/sessions", "Content-Length: 100\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(b"{\"user_id\":").await.unwrap();
    let response = read_all(&mut tcp).await;
    assert_json_error(&response, 408, "slow body");

    // A keep-alive connection: served, then closed once idle for `idle_timeout_ms`.
    let mut tcp = connect(&server).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let served = Instant::now();
    // A second request on the same connection before the idle timeout works.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let served_again = Instant::now();
    assert!(served_again - served < idle, "the test itself was too slow");
    let rest = read_all(&mut tcp).await;
    assert_eq!(rest, "", "nothing more is sent on an idle connection");
    // The server's idle clock starts when it finished the response, a moment before the
    // client read it.
    let margin = Duration::from_millis(100);
    assert!(
        served_again.elapsed() + margin >= idle,
        "closed before the idle timeout"
    );
}

#[tokio::test]
async fn connection_caps_answer_503_and_free_their_slots() {
    for (max_all, max_per_ip) in [(0, 4), (4, 0)] {
        let server = TestServer::start(EngineKind::Memory, |c: &mut Config| {
            c.http.max_connections = max_all;
            c.http.max_connections_per_ip = max_per_ip;
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut tcp = connect(&server).await;
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .unwrap();
            let response = read_response(&mut tcp).await;
            assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
            held.push(tcp);
        }
        let context = format!("max_connections {max_all}, per ip {max_per_ip}");
        let mut extra = connect(&server).await;
        extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let response = read_all(&mut extra).await;
        assert_json_error(&response, 503, &context);
        // Closing the held connections gives their slots back.
        drop(held);
        let deadline = Instant::now() + WAIT;
        loop {
            let mut tcp = connect(&server).await;
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let response = read_all(&mut tcp).await;
            if response.starts_with("HTTP/1.1 200 ") {
                break;
            }
            assert!(Instant::now() < deadline, "{context}: slots never freed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The default cap (`http.max_headers` = 100) is left to hyper's own default (see listener.rs):
/// a head of exactly 100 header lines passes, 101 get a 431.
#[tokio::test]
async fn default_header_cap_is_100() {
    let server = TestServer::start(EngineKind::Memory, |_: &mut Config| {}).await;
    for (lines, status) in [(100, "200"), (101, "431")] {
        // `Host` and `Connection` are two of the lines.
        let extra: String = (0..lines - 2).map(|i| format!("X-H{i}: v\r\n")).collect();
        let mut tcp = connect(&server).await;
        let request =
            format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let response = read_all(&mut tcp).await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status} ")),
            "{lines} header lines: {response}"
        );
    }
}

#[tokio::test]
async fn oversized_heads_get_a_431() {
    let server = TestServer::start(EngineKind::Memory, |c: &mut Config| {
        c.http.max_headers = 20;
        c.http.max_header_bytes = 8 * 1024;
    })
    .await;
    let many: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long = format!("X-Long: {}\r\n", "v".repeat(16 * 1024));
    for (extra, context) in [(many, "header count"), (long, "header size")] {
        let mut tcp = connect(&server).await;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let response = read_all(&mut tcp).await;
        assert!(
            response.starts_with("HTTP/1.1 431 "),
            "{context}: {response}"
        );
    }
    let res = server.get("/healthz").send().await.unwrap();
    assert_eq!(res.status(), 200);
}
