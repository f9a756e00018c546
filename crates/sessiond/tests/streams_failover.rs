//! Three real `sessiond` processes on one durable Redis (AOF, `appendfsync always`): `kill -9`
//! of a node while clients append to a stream, merge fields into one session and publish
//! realtime messages through all of them loses no acknowledged write (every appended token,
//! merged field and published message is there afterwards, the messages recoverable by offset
//! on another node), an SSE reader of the dead node resumes on another node by offset with
//! nothing lost or doubled, and a Redis crash + restart answers 503 + Retry-After meanwhile
//! (never 500) and then serves every acknowledged write again, without restarting sessiond.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;

// The real-binary spawner (it needs CARGO_BIN_EXE_sessiond, so it is not part of common/).
#[path = "common/binary.rs"]
mod binary;
mod common;
mod realtime_support;

use binary::Binary;

const STREAM: &str = "/v1/stream/failover/log";
const WRITERS: usize = 6;
const APPENDS: usize = 40;
/// The realtime channel written to: the reader user's own channel, so it may subscribe.
const CHANNEL: &str = "user:failover-reader";

/// What the writers got acknowledged.
#[derive(Default)]
struct Acked {
    appends: Vec<String>,
    /// Session data keys merged with PATCH.
    fields: Vec<String>,
    /// Realtime messages: (token, offset).
    messages: Vec<(String, u64)>,
}

/// A `sessiond serve` process on the Redis engine (killed, SIGKILL, on drop).
fn spawn_node(redis: &RedisServer) -> Binary {
    Binary::spawn_on_redis(&redis.url(), &["--long-poll-timeout-ms", "500"], &[])
}

/// Follows the stream over SSE from `urls[0]`, moving to the next URL (from the last offset a
/// control event confirmed) whenever a connection ends; returns the data once it has `want`
/// bytes.
async fn follow(
    http: reqwest::Client,
    urls: Vec<String>,
    done: Arc<Mutex<Option<usize>>>,
) -> String {
    let mut data = String::new();
    let mut offset = "-1".to_owned();
    let mut node = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if done.lock().unwrap().is_some_and(|want| data.len() >= want) {
            return data;
        }
        assert!(Instant::now() < deadline, "reader did not catch up");
        let url = format!("{}?offset={offset}&live=sse", urls[node % urls.len()]);
        let Ok(mut res) = http.get(&url).send().await else {
            node += 1; // that node is gone: resume on the next one
            continue;
        };
        let mut buf = String::new();
        let mut pending = String::new();
        while let Ok(Some(chunk)) = res.chunk().await {
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let payload: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .collect();
                if event.starts_with("event: data") {
                    pending = payload.join("\n");
                } else if event.starts_with("event: control") {
                    // Data counts once its control (with the offset after it) arrived.
                    let c: Value = serde_json::from_str(&payload.join("")).unwrap();
                    data.push_str(&std::mem::take(&mut pending));
                    offset = c["streamNextOffset"].as_str().unwrap().to_owned();
                }
            }
            if done.lock().unwrap().is_some_and(|want| data.len() >= want) {
                return data;
            }
        }
        node += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_a_node_and_a_redis_restart_lose_no_acknowledged_write() {
    let mut redis = RedisServer::start_durable();
    let mut nodes: Vec<Option<Binary>> = (0..3).map(|_| Some(spawn_node(&redis))).collect();
    let bases: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().base.clone())
        .collect();
    let urls: Vec<String> = bases.iter().map(|b| format!("{b}{STREAM}")).collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = http
        .put(&urls[0])
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let session = create_session(&http, &bases[0], "failover-writer").await;
    let reader_token = create_session(&http, &bases[0], "failover-reader").await;
    // The channel's epoch, read on the node that will die.
    let mut ws = reader_socket(&bases[1], &reader_token).await;
    let epoch = subscribe(&mut ws, None).await["epoch"].clone();
    drop(ws);

    // A reader on the node that will die.
    let want: Arc<Mutex<Option<usize>>> = Arc::default();
    let reader = tokio::spawn(follow(
        http.clone(),
        vec![urls[1].clone(), urls[2].clone(), urls[0].clone()],
        want.clone(),
    ));

    let acked_count = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (http, bases, session) = (http.clone(), bases.clone(), session.clone());
        let (acked, acked_count) = (acked.clone(), acked_count.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..APPENDS {
                let token = format!("<{w}-{n:03}>");
                let base = &bases[(w + n) % bases.len()];
                if let Ok(res) = append(&http, &format!("{base}{STREAM}"), &token).await {
                    if res.status() == 204 {
                        acked.lock().unwrap().appends.push(token.clone());
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let field = format!("f{w}_{n:03}");
                if let Ok(res) = merge(&http, base, &session, &field).await {
                    if res.status() == 200 {
                        acked.lock().unwrap().fields.push(field);
                    }
                }
                if let Ok(res) = publish(&http, base, &token).await {
                    if res.status() == 200 {
                        let offset = res.json::<Value>().await.unwrap()["offset"].as_u64();
                        acked
                            .lock()
                            .unwrap()
                            .messages
                            .push((token, offset.unwrap()));
                    }
                }
            }
        }));
    }
    // kill -9 node 1 once a third of the appends were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_count.load(Ordering::Relaxed) < WRITERS * APPENDS / 3 {
        assert!(Instant::now() < deadline, "appends did not progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(nodes[1].take());
    for w in writers {
        w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    for (what, n) in [
        ("appends", acked.appends.len()),
        ("merges", acked.fields.len()),
        ("publishes", acked.messages.len()),
    ] {
        assert!(n > WRITERS * APPENDS / 2, "survivors kept serving {what}");
    }

    let read_all = |url: String| {
        let http = http.clone();
        async move {
            let res = http.get(format!("{url}?offset=-1")).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.text().await.unwrap()
        }
    };
    let body = read_all(urls[0].clone()).await;
    for token in &acked.appends {
        assert_eq!(
            body.matches(token.as_str()).count(),
            1,
            "{token} exactly once"
        );
    }
    assert_eq!(
        body.matches('<').count() * 7,
        body.len(),
        "whole appends only"
    );
    // Every merged field is in the session, read through another survivor.
    let data = read_session(&http, &bases[2], &session).await;
    for field in &acked.fields {
        assert_eq!(data[field], true, "merged field {field} lost");
    }
    // Every published message is recoverable by offset on a survivor, each at its offset.
    let mut ws = reader_socket(&bases[2], &reader_token).await;
    let sub = subscribe(&mut ws, Some(json!({"epoch": epoch, "offset": 0}))).await;
    assert_eq!(sub["recovered"], true, "{sub}");
    let recovered: Vec<(String, u64)> = sub["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["data"].as_str().unwrap().to_owned(),
                m["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    for (i, (_, offset)) in recovered.iter().enumerate() {
        assert_eq!(*offset, i as u64 + 1, "offsets without gap or duplicate");
    }
    for message in &acked.messages {
        assert!(recovered.contains(message), "published {message:?} lost");
    }
    drop(ws);

    // The reader of the dead node resumed elsewhere and saw exactly the stream.
    *want.lock().unwrap() = Some(body.len());
    let followed = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("reader finished")
        .unwrap();
    assert_eq!(followed, body, "resumed by offset: nothing lost or doubled");

    // Redis crashes: writes of every kind answer 503 + Retry-After (never 500).
    redis.kill9();
    for res in [
        append(&http, &urls[2], "<x-000>").await,
        merge(&http, &bases[2], &session, "down").await,
        publish(&http, &bases[2], "<x-001>").await,
    ] {
        let res = res.unwrap();
        assert_eq!(res.status(), 503, "{}", res.url());
        assert!(res.headers().contains_key("retry-after"));
    }
    redis.restart();
    // Every survivor serves again (a node's first call on its broken connection may still be
    // a 503 while it reconnects), with every acknowledged write.
    for n in [0, 2] {
        let stream = until_served(|| http.get(format!("{}?offset=-1", urls[n]))).await;
        assert_eq!(stream.text().await.unwrap(), body);
        let res = until_served(|| http.get(format!("{}/v1/sessions/{session}", bases[n]))).await;
        let data = &res.json::<Value>().await.unwrap()["data"];
        assert!(acked.fields.iter().all(|f| data[f] == true));
    }
    assert_eq!(
        append(&http, &urls[0], "<y-000>").await.unwrap().status(),
        204,
        "appends work again without a sessiond restart"
    );
    assert_eq!(
        merge(&http, &bases[0], &session, "after")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        publish(&http, &bases[2], "<y-001>").await.unwrap().status(),
        200
    );
}

/// Sends the request `make` builds until it is not a 503 (bounded); panics on anything but
/// 200 (a 500 would be a bug).
async fn until_served(make: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = make().send().await.unwrap();
        match res.status().as_u16() {
            200 => return res,
            503 => assert!(Instant::now() < deadline, "service did not resume"),
            other => panic!("unexpected status {other} while Redis restarts"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn append(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> reqwest::Result<reqwest::Response> {
    http.post(url)
        .header("content-type", "text/plain")
        .body(token.to_owned())
        .send()
        .await
}

/// Merges `{field: true}` into the session's data (JSON Merge Patch).
async fn merge(
    http: &reqwest::Client,
    base: &str,
    session: &str,
    field: &str,
) -> reqwest::Result<reqwest::Response> {
    http.patch(format!("{base}/v1/sessions/{session}"))
        .json(&json!({"data": {field: true}}))
        .send()
        .await
}

async fn publish(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{base}/v1/realtime/publish"))
        .json(&json!({"channel": CHANNEL, "data": token}))
        .send()
        .await
}

/// Creates a session of `user`; returns its id.
async fn create_session(http: &reqwest::Client, base: &str, user: &str) -> String {
    let res = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn read_session(http: &reqwest::Client, base: &str, session: &str) -> Value {
    let res = http
        .get(format!("{base}/v1/sessions/{session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["data"].clone()
}

/// A v1 socket of the reader's session on the node at `base`, `connected` read.
async fn reader_socket(base: &str, token: &str) -> realtime_support::Ws {
    let addr = base.trim_start_matches("http://");
    let path = format!("/v1/realtime?token={token}&deviceId=reader");
    let mut ws = realtime_support::connect_at(addr, &path, &[]).await.open();
    ws.expect("connected").await;
    ws
}

/// Subscribes to the channel (recovering from `since`); returns the `subscribed` reply.
async fn subscribe(ws: &mut realtime_support::Ws, since: Option<Value>) -> Value {
    let mut frame = json!({"type": "subscribe", "id": 1, "channel": CHANNEL});
    if let Some(since) = since {
        frame["since"] = since;
    }
    ws.send(frame).await;
    ws.expect("subscribed").await
}
