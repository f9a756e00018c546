//! Live reads on threads of their own (`http.live_read_threads`), on the real binary: a
//! connection that opens with a live read (`live=sse`, `live=long-poll`) is served by the
//! live-read threads (counted in `/metrics`), every other connection is not, and readers get
//! every append in order whichever threads serve them, including with the threads off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[path = "common/binary.rs"]
mod binary;
use binary::{create_text_stream, metric, Binary};

const KEY: &str = "live-reads-test-key-0123456789";
const STREAM: &str = "/v1/stream/live/s";
const READERS: usize = 8;
const APPENDS: usize = 40;
const PLACED: &str = "sessiond_http_live_read_connections_total";

fn start(dir: &std::path::Path, threads: &str) -> Binary {
    Binary::spawn(
        dir,
        &[
            ("SESSIOND_API_KEYS", KEY.to_string()),
            ("SESSIOND_HTTP__LIVE_READ_THREADS", threads.to_string()),
        ],
    )
}

/// A client whose every request opens a connection of its own, so each request is the first
/// of its connection (placement looks at that one).
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Reads an SSE response until its data events hold `want` bytes; returns them.
async fn read_sse(mut res: reqwest::Response, want: usize) -> String {
    let mut text = String::new();
    let mut data = String::new();
    while data.len() < want {
        let chunk = res.chunk().await.unwrap().expect("SSE ended early");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if block.starts_with("event: data") {
                for line in block.lines().filter_map(|l| l.strip_prefix("data:")) {
                    data.push_str(line);
                }
            }
        }
    }
    data
}

/// `READERS` SSE readers and one long-poll reader get all of `APPENDS` appends, in order.
async fn readers_get_every_append(server: &Binary) {
    let http = fresh_connections();
    create_text_stream(&http, &server.url(STREAM), KEY).await;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let res = http
            .get(server.url(&format!("{STREAM}?offset=-1&live=sse")))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        readers.push(tokio::spawn(read_sse(res, APPENDS * 3)));
    }
    let long_poll = {
        let (http, url) = (
            http.clone(),
            server.url(&format!("{STREAM}?offset=-1&live=long-poll")),
        );
        tokio::spawn(async move {
            let res = http.get(url).bearer_auth(KEY).send().await.unwrap();
            (res.status(), res.text().await.unwrap())
        })
    };
    let mut expected = String::new();
    for i in 0..APPENDS {
        let body = format!("{i:03}");
        let res = http
            .post(server.url(STREAM))
            .bearer_auth(KEY)
            .header("content-type", "text/plain")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        expected.push_str(&body);
    }
    for reader in readers {
        let got = tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .expect("an SSE reader did not get every append")
            .unwrap();
        assert_eq!(got, expected);
    }
    let (status, text) = long_poll.await.unwrap();
    assert_eq!(status, 200);
    assert!(expected.starts_with(&text) && !text.is_empty(), "{text}");
}

#[tokio::test]
async fn live_reads_are_placed_on_their_threads_and_get_every_append() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "1");
    let http = fresh_connections();
    assert_eq!(metric(&http, &server.base, PLACED).await, 0.0);
    readers_get_every_append(&server).await;
    // The SSE readers and the long-poll; not the create, the appends or the /metrics reads.
    assert_eq!(
        metric(&http, &server.base, PLACED).await,
        (READERS + 1) as f64
    );
    server.stop();
}

#[tokio::test]
async fn with_no_live_threads_live_reads_share_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "0");
    readers_get_every_append(&server).await;
    let http = fresh_connections();
    assert_eq!(metric(&http, &server.base, PLACED).await, 0.0);
    server.stop();
}
