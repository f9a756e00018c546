//! Durable Streams on the real binary with SQLite: every acknowledged append survives
//! `kill -9` byte for byte at the offset it was acknowledged with, and idempotent producer
//! state survives too (a retried `(id, epoch, seq)` is a 204 duplicate, the next seq is taken).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::process::Child;

use serde_json::{json, Value};

// The real-binary spawner (it needs CARGO_BIN_EXE_sessiond, so it is not part of common/).
#[path = "common/binary.rs"]
mod binary;

const WRITERS: usize = 8;
const APPENDS: usize = 25;

/// Starts `sessiond serve` on SQLite and a free port; returns it with its base URL.
fn spawn(data_dir: &std::path::Path) -> (Child, String) {
    let args = [
        OsStr::new("--engine"),
        OsStr::new("sqlite"),
        OsStr::new("--data-dir"),
    ];
    binary::serve(args.into_iter().chain([data_dir.as_os_str()]), &[])
}

/// The position in a `Stream-Next-Offset` token.
fn position(token: &str) -> u64 {
    token.rsplit('_').next().unwrap().parse().unwrap()
}

fn token(position: u64) -> String {
    format!("{:016}_{position:016}", 0)
}

/// One acknowledged append: where it landed and what it was.
struct Acked {
    stream: String,
    start: u64,
    bytes: Vec<u8>,
}

/// A producer's last accepted request, to retry after the restart.
struct LastProducer {
    stream: String,
    id: String,
    seq: usize,
    body: Vec<u8>,
    content_type: &'static str,
}

fn payload(json: bool, stream: usize, writer: usize, i: usize) -> Vec<u8> {
    if json {
        serde_json::to_vec(&json!({"i": i, "s": stream, "w": writer})).unwrap()
    } else {
        // Not UTF-8 on purpose, and of varying length.
        let mut b = vec![0xff, stream as u8, writer as u8, i as u8];
        b.extend(std::iter::repeat_n(b'x', (writer * 7 + i) % 50));
        b
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_appends_and_producer_state_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn(dir.path());
    let http = reqwest::Client::new();

    // Two binary and two JSON streams.
    let streams: Vec<(String, bool)> = (0..4)
        .map(|s| (format!("durable/s{s}"), s % 2 == 1))
        .collect();
    for (name, json) in &streams {
        let ct = if *json {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let res = http
            .put(format!("{base}/v1/stream/{name}"))
            .header("content-type", ct)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }

    // Every writer appends sequentially; writers run concurrently. Odd writers are
    // idempotent producers (their own id, epoch 0, seq 0..).
    let mut tasks = Vec::new();
    for (s, (name, json)) in streams.iter().cloned().enumerate() {
        for w in 0..WRITERS {
            let (http, base, name) = (http.clone(), base.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                let ct = if json {
                    "application/json"
                } else {
                    "application/octet-stream"
                };
                let producer = (w % 2 == 1).then(|| format!("p-{s}-{w}"));
                let mut acked = Vec::new();
                let mut last = None;
                for i in 0..APPENDS {
                    let body = payload(json, s, w, i);
                    let mut req = http
                        .post(format!("{base}/v1/stream/{name}"))
                        .header("content-type", ct)
                        .body(body.clone());
                    if let Some(id) = &producer {
                        req = req
                            .header("producer-id", id)
                            .header("producer-epoch", "0")
                            .header("producer-seq", i.to_string());
                    }
                    let res = req.send().await.unwrap();
                    let expected = if producer.is_some() { 200 } else { 204 };
                    assert_eq!(res.status(), expected, "append {s}/{w}/{i}");
                    let next = res.headers()["stream-next-offset"].to_str().unwrap();
                    let end = position(next);
                    acked.push(Acked {
                        stream: name.clone(),
                        start: end - body.len() as u64,
                        bytes: body.clone(),
                    });
                    if let Some(id) = &producer {
                        last = Some(LastProducer {
                            stream: name.clone(),
                            id: id.clone(),
                            seq: i,
                            body,
                            content_type: ct,
                        });
                    }
                }
                (acked, last)
            }));
        }
    }
    let mut acked = Vec::new();
    let mut producers = Vec::new();
    for t in tasks {
        let (a, p) = t.await.unwrap();
        acked.extend(a);
        producers.extend(p);
    }
    child.kill().unwrap(); // SIGKILL: no flush, no shutdown hook.
    child.wait().unwrap();

    let (mut child, base) = spawn(dir.path());

    // Each stream holds exactly the acknowledged bytes: binary streams byte for byte at their
    // offsets; JSON streams value for value, each readable at its own offset.
    for (name, json) in &streams {
        let mine: Vec<&Acked> = acked.iter().filter(|a| &a.stream == name).collect();
        let total: u64 = mine.iter().map(|a| a.bytes.len() as u64).sum();
        assert_eq!(mine.len(), WRITERS * APPENDS);
        let head = http
            .head(format!("{base}/v1/stream/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        let tail = position(head.headers()["stream-next-offset"].to_str().unwrap());
        assert_eq!(
            tail, total,
            "{name}: tail is the sum of acknowledged appends"
        );
        if *json {
            for a in &mine {
                let res = http
                    .get(format!("{base}/v1/stream/{name}?offset={}", token(a.start)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let values: Vec<Value> = res.json().await.unwrap();
                let expected: Value = serde_json::from_slice(&a.bytes).unwrap();
                assert_eq!(values.first(), Some(&expected), "{name} at {}", a.start);
            }
            continue;
        }
        let mut data = Vec::new();
        let mut next = "-1".to_string();
        loop {
            let res = http
                .get(format!("{base}/v1/stream/{name}?offset={next}"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let done = res.headers().contains_key("stream-up-to-date");
            next = res.headers()["stream-next-offset"]
                .to_str()
                .unwrap()
                .to_string();
            data.extend_from_slice(&res.bytes().await.unwrap());
            if done {
                break;
            }
        }
        assert_eq!(data.len() as u64, total);
        for a in &mine {
            let at = a.start as usize;
            assert_eq!(
                &data[at..at + a.bytes.len()],
                &a.bytes[..],
                "{name}: append at {at} survived byte for byte"
            );
        }
    }

    // Producer state survived: the last request again is a duplicate, the next seq is new.
    assert_eq!(producers.len(), streams.len() * WRITERS / 2);
    for p in &producers {
        let send = |seq: usize| {
            http.post(format!("{base}/v1/stream/{}", p.stream))
                .header("content-type", p.content_type)
                .header("producer-id", &p.id)
                .header("producer-epoch", "0")
                .header("producer-seq", seq.to_string())
                .body(p.body.clone())
                .send()
        };
        let retry = send(p.seq).await.unwrap();
        assert_eq!(retry.status(), 204, "{}: retried seq is a duplicate", p.id);
        let next = send(p.seq + 1).await.unwrap();
        assert_eq!(next.status(), 200, "{}: the next seq is accepted", p.id);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
