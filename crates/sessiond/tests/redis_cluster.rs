//! Two real `sessiond` processes on a private 3-master Redis Cluster (`redis.cluster = true`,
//! seed URLs in `redis.urls`): sessions, stream appends and reads, a fork and its deletion,
//! and a realtime publish on one node reaching a WebSocket on the other all work through the
//! cluster client (slot routing, `MOVED`/`ASK`), with no `CROSSSLOT` refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisCluster;
use tokio_tungstenite::tungstenite::Message;

#[path = "common/binary.rs"]
mod binary;

const KEY: &str = "redis-cluster-test-key-0123456789";

/// A `sessiond serve` on the cluster (killed on drop).
fn node(cluster: &RedisCluster) -> binary::Binary {
    let urls = format!("[{}]", cluster.urls().join(","));
    let args = ["--engine", "redis", "--api-key", KEY].map(OsStr::new);
    let env = [
        ("SESSIOND_REDIS__CLUSTER", "true".to_string()),
        ("SESSIOND_REDIS__URLS", urls),
        binary::shared_signing_key(),
    ];
    binary::Binary::start(args, &env)
}

async fn body(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// The next text frame as JSON, within 10 s.
async fn next_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessiond_runs_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let (a, b) = (node(&cluster), node(&cluster));
    let http = reqwest::Client::new();

    // Sessions: created on A, merged on B, read on A.
    let res = http
        .post(a.url("/v1/sessions"))
        .bearer_auth(KEY)
        .json(&json!({"user_id": "alice", "data": {"cart": [1]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = http
        .patch(b.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(KEY)
        .json(&json!({"data": {"theme": "dark"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got: Value = http
        .get(a.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"], json!({"cart": [1], "theme": "dark"}));

    // Streams: created and appended on A and B, read on either.
    let src = "/v1/stream/cluster/src";
    let put = |url: String| {
        http.put(url)
            .bearer_auth(KEY)
            .header("content-type", "text/plain")
    };
    assert_eq!(body(put(a.url(src)).send().await.unwrap()).await.0, 201);
    for (n, part) in [(&a, "one;"), (&b, "two;")] {
        let res = http
            .post(n.url(src))
            .bearer_auth(KEY)
            .header("content-type", "text/plain")
            .body(part)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    let read = |n: &binary::Binary, path: &str| {
        http.get(n.url(&format!("{path}?offset=-1")))
            .bearer_auth(KEY)
            .send()
    };
    assert_eq!(
        body(read(&b, src).await.unwrap()).await,
        (200, "one;two;".into())
    );

    // A fork (its source is another slot), appended on B, deleted on A.
    let fork = "/v1/stream/cluster/fork";
    let res = put(b.url(fork))
        .header("stream-forked-from", src)
        .send()
        .await
        .unwrap();
    assert_eq!(body(res).await.0, 201);
    let res = http
        .post(b.url(fork))
        .bearer_auth(KEY)
        .header("content-type", "text/plain")
        .body("three;")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        body(read(&a, fork).await.unwrap()).await,
        (200, "one;two;three;".into())
    );
    // The source counts its fork: deleting it only soft-deletes it (410), the fork reads on.
    let res = http
        .delete(a.url(src))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(read(&b, src).await.unwrap().status(), 410);
    assert_eq!(read(&b, fork).await.unwrap().status(), 200);
    // Deleting the fork releases the source, which then goes too.
    let res = http
        .delete(a.url(fork))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(read(&b, fork).await.unwrap().status(), 404);
    assert_eq!(read(&b, src).await.unwrap().status(), 404);

    // Realtime: a socket on B receives a publish made on A.
    let ws_url = format!(
        "{}/v1/realtime?token={id}&deviceId=phone",
        b.base.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "connected");
    let sub = json!({"type": "subscribe", "id": 1, "channel": "user:alice"});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "subscribed");
    let res = http
        .post(a.url("/v1/realtime/publish"))
        .bearer_auth(KEY)
        .json(&json!({"channel": "user:alice", "data": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let message = loop {
        let frame = next_frame(&mut ws).await;
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!(message["data"], json!({"n": 1}));
}

#[test]
fn seed_urls_without_cluster_mode_are_refused() {
    let check = |cluster: &str| {
        let (key, keys) = binary::shared_signing_key();
        std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .args(["check-config", "--engine", "redis"])
            .env_remove("SESSIOND_API_KEYS")
            .env(key, keys)
            .env("SESSIOND_REDIS__URLS", "[redis://127.0.0.1:7000]")
            .env("SESSIOND_REDIS__CLUSTER", cluster)
            .output()
            .unwrap()
    };
    let out = check("false");
    assert!(!out.status.success(), "redis.urls needs redis.cluster");
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis.cluster = true"));
    let out = check("true");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Forks made on A while B appends to their source: each fork's link races B's commits on the
/// source's slot and is decided again on fresh metadata, so the source ends up counting
/// exactly its forks (it goes away with the last one, not before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_race_appends_on_a_redis_cluster() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let cluster = RedisCluster::start();
    let (a, b) = (node(&cluster), node(&cluster));
    let http = reqwest::Client::new();
    let src = "/v1/stream/race/src";
    let res = http
        .put(a.url(src))
        .bearer_auth(KEY)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicUsize::new(0));
    let appender = {
        let (http, url, stop, appended) =
            (http.clone(), b.url(src), stop.clone(), appended.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let res = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .header("content-type", "text/plain")
                    .body("a;")
                    .send()
                    .await
                    .unwrap();
                match res.status().as_u16() {
                    204 => {
                        appended.fetch_add(1, Ordering::Relaxed);
                    }
                    410 => break,
                    other => panic!("append answered {other}"),
                }
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while appended.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "B never appended");
        tokio::task::yield_now().await;
    }
    const FORKS: usize = 6;
    // A fork rewrites only its source's state (it counts the fork), never its tail, so B's
    // appends (which leave the state as it is) cannot make it lose: each is created on the
    // first try, however busy the source.
    for i in 0..FORKS {
        let res = http
            .put(a.url(&format!("/v1/stream/race/fork-{i}")))
            .bearer_auth(KEY)
            .header("content-type", "text/plain")
            .header("stream-forked-from", src)
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert_eq!(status, 201, "fork {i}: {}", res.text().await.unwrap());
    }
    // Soft-deleted while forks read it; B's appends then stop with 410.
    let res = http
        .delete(a.url(src))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    stop.store(true, Ordering::Relaxed);
    appender.await.unwrap();
    let status = |n: &binary::Binary, path: String| {
        let req = http
            .get(n.url(&format!("{path}?offset=-1")))
            .bearer_auth(KEY);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for i in 0..FORKS {
        let fork = format!("/v1/stream/race/fork-{i}");
        assert_eq!(
            status(&b, src.to_string()).await,
            410,
            "before fork {i} goes"
        );
        let res = http
            .delete(b.url(&fork))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(status(&a, fork).await, 404);
    }
    assert_eq!(
        status(&a, src.to_string()).await,
        404,
        "gone with its last fork"
    );
}
