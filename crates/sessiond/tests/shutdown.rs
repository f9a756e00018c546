//! Shutdown for rolling restarts, on the real binary: with 100 SSE readers, 100 waiting
//! long-polls and 100 WebSockets open and appends in flight, SIGTERM makes the process exit
//! within 3 s; every SSE response ends with a control event then EOF, every long-poll gets its
//! 204 with `Stream-Next-Offset`, every socket gets 1001 with a reason, every acknowledged
//! append survives, and each client resumes from its offset on the restarted server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[path = "common/binary.rs"]
mod binary;
use binary::Binary;

const KEY: &str = "shutdown-test-key-0123456789";
const CLIENTS: usize = 100;
const STREAM: &str = "/v1/stream/drain/s";
const WRITES: &str = "/v1/stream/drain/w";

fn start(dir: &std::path::Path) -> Binary {
    Binary::spawn(dir, &[("SESSIOND_API_KEYS", KEY.to_string())])
}

/// The SSE events (`event` name, `data` text) in `text`.
fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.to_string());
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

/// An SSE reader, after its first control event: it then reads to EOF and returns all text.
async fn open_sse(http: &reqwest::Client, base: &str) -> tokio::task::JoinHandle<String> {
    let mut res = http
        .get(format!("{base}{STREAM}?offset=-1&live=sse"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut text = String::new();
    while !text.contains("event: control") {
        let chunk = res
            .chunk()
            .await
            .unwrap()
            .expect("SSE ended before its first event");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    tokio::spawn(async move {
        while let Some(chunk) = res.chunk().await.expect("SSE cut without a clean end") {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text
    })
}

/// Sessions of 10 users (a user may hold 16 sockets), `CLIENTS` tokens in all.
async fn tokens(http: &reqwest::Client, base: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..CLIENTS {
        let res = http
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(KEY)
            .json(&json!({"user_id": format!("user{}", i % 10)}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        tokens.push(body["id"].as_str().unwrap().to_string());
    }
    tokens
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connected v1 socket (after its `connected` frame).
async fn socket(base: &str, token: &str, device: usize) -> Socket {
    let url = format!(
        "{}/v1/realtime?deviceId=d{device}&token={token}",
        base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(frame["type"], "connected", "{frame}");
                return ws;
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no connected frame: {other:?}"),
        }
    }
}

/// Reads until the server's close frame: (code, reason).
async fn close_of(mut ws: Socket) -> (u16, String) {
    while let Some(frame) = ws.next().await {
        if let Message::Close(Some(close)) = frame.expect("socket error before the close frame") {
            return (u16::from(close.code), close.reason.to_string());
        }
    }
    panic!("socket ended without a close frame")
}

async fn metric(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn read_from(http: &reqwest::Client, base: &str, path: &str, offset: &str) -> String {
    let res = http
        .get(format!("{base}{path}?offset={offset}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_every_live_client_within_3_s_and_they_resume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let base = server.base.clone();
    let http = reqwest::Client::new();
    for path in [STREAM, WRITES] {
        binary::create_text_stream(&http, &format!("{base}{path}"), KEY).await;
    }
    let res = http
        .post(format!("{base}{STREAM}"))
        .bearer_auth(KEY)
        .header("content-type", "text/plain")
        .body("before;")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let tail = res.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_string();

    let mut sse = Vec::new();
    for _ in 0..CLIENTS {
        sse.push(open_sse(&http, &base).await);
    }
    let polls: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let request = http
                .get(format!("{base}{STREAM}?offset={tail}&live=long-poll"))
                .bearer_auth(KEY)
                .send();
            tokio::spawn(request)
        })
        .collect();
    let tokens = tokens(&http, &base).await;
    let mut sockets = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        sockets.push(socket(&base, token, i).await);
    }
    // Every long-poll is waiting at the tail before the signal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &http,
        &base,
        "sessiond_streams_live_open{mode=\"long_poll\"}",
    )
    .await
        < CLIENTS as f64
    {
        assert!(Instant::now() < deadline, "long-polls did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Appends racing the signal: each one acknowledged must survive.
    let writes: Vec<_> = (0..50)
        .map(|i| {
            let request = http
                .post(format!("{base}{WRITES}"))
                .bearer_auth(KEY)
                .header("content-type", "text/plain")
                .body(format!("w{i};"))
                .send();
            tokio::spawn(async move { request.await.is_ok_and(|r| r.status().is_success()) })
        })
        .collect();

    let signalled = Instant::now();
    server.terminate();
    let mut server = server;
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.exited_by(signalled + Duration::from_secs(3));
        println!("exited {:?} after SIGTERM", signalled.elapsed());
        (status, server)
    });

    for reader in sse {
        let text = tokio::time::timeout(Duration::from_secs(3), reader)
            .await
            .expect("SSE response not ended")
            .unwrap();
        let events = sse_events(&text);
        let (name, data) = events.last().unwrap();
        assert_eq!(name, "control", "last SSE event: {text}");
        let control: Value = serde_json::from_str(data).unwrap();
        assert_eq!(control["streamNextOffset"], tail.as_str(), "{control}");
        assert!(control["streamCursor"].is_string(), "{control}");
    }
    for poll in polls {
        let res = tokio::time::timeout(Duration::from_secs(3), poll)
            .await
            .expect("long-poll not answered")
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(res.headers()["stream-next-offset"], tail.as_str());
    }
    for ws in sockets {
        let (code, reason) = tokio::time::timeout(Duration::from_secs(3), close_of(ws))
            .await
            .expect("socket not closed");
        assert_eq!((code, reason.as_str()), (1001, "Server shutting down"));
    }
    let mut acked = Vec::new();
    for (i, write) in writes.into_iter().enumerate() {
        if write.await.unwrap() {
            acked.push(format!("w{i};"));
        }
    }
    let (status, server) = exit.await.unwrap();
    let status = status.unwrap_or_else(|| panic!("still running 3 s after SIGTERM"));
    assert!(status.success(), "exit status {status}");
    assert!(
        !server
            .logs
            .lines()
            .iter()
            .any(|l| l.contains("grace period")),
        "the drain waited for the grace period"
    );
    drop(server);

    // The restarted server (same data dir) continues where the clients stopped.
    let server = start(dir.path());
    let base = server.base.clone();
    let res = http
        .post(format!("{base}{STREAM}"))
        .bearer_auth(KEY)
        .header("content-type", "text/plain")
        .body("after;")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(read_from(&http, &base, STREAM, &tail).await, "after;");
    let written = read_from(&http, &base, WRITES, "-1").await;
    for item in &acked {
        assert!(written.contains(item.as_str()), "acknowledged {item} lost");
    }
    let again = socket(&base, &tokens[0], 0).await;
    drop(again);
    server.stop();
}
