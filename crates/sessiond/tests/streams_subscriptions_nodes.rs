//! `__ds` subscriptions on two sessiond nodes sharing one Redis, as a client behind a
//! round-robin load balancer uses them: a subscription created through one node is matched by
//! appends made through the other, each wake is issued and delivered by exactly one node,
//! callbacks, claims and acks work through either node, and when the node holding a wake dies
//! (`kill -9`) the other one redelivers after the lease. A node checks for other nodes'
//! subscription changes at most once per `index_check_ms`, not once per append.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use common::{json, TestServer};
use serde_json::{json as j, Value};
use sessiond_engine_redis::testing::RedisServer;
use tokio::sync::Notify;

// The real-binary spawner (it needs CARGO_BIN_EXE_sessiond, so it is not part of common/).
#[path = "common/binary.rs"]
mod binary;

type Received = Arc<(Mutex<Vec<Value>>, Notify)>;

/// A loopback webhook receiver that records every body and answers `{}` (the wake stays with
/// the callback or the lease).
async fn receiver() -> (String, Received) {
    let received: Received = Arc::new((Mutex::new(Vec::new()), Notify::new()));
    let r = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                r.0.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                r.1.notify_waiters();
                axum::Json(j!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

/// Waits until the receiver holds `n` deliveries; returns them all.
async fn deliveries(received: &Received, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let notified = received.1.notified();
        {
            let seen = received.0.lock().unwrap();
            if seen.len() >= n {
                return seen.clone();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{n} deliveries within {within:?}");
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
    }
}

async fn two_nodes() -> (RedisServer, TestServer, TestServer) {
    let redis = RedisServer::start();
    let tweak = |c: &mut sessiond::config::Config| c.streams.allow_insecure_webhooks = true;
    let a = TestServer::start_node(&redis, tweak).await;
    let b = TestServer::start_node(&redis, tweak).await;
    (redis, a, b)
}

fn webhook_sub(hook: &str, lease_ms: u64) -> Value {
    j!({"type": "webhook", "pattern": "jobs/*", "webhook": {"url": hook}, "lease_ttl_ms": lease_ms})
}

/// The same request path on another node (callback URLs name the node that created the
/// subscription).
fn on_node(url: &str, node: &str) -> String {
    let path = url.splitn(4, '/').nth(3).unwrap();
    format!("{node}/{path}")
}

/// POSTs an ack / callback with the wake's token.
async fn ack(url: &str, token: &str, body: Value) -> (u16, Value) {
    json(
        reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

/// `(path, tail_offset)` of each stream of a wake.
fn tails(wake: &Value) -> Vec<Value> {
    wake["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| j!({"stream": s["path"], "offset": s["tail_offset"]}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_wakes_are_delivered_once_and_acked_through_either_node() {
    let (_redis, a, b) = two_nodes().await;
    let (hook, received) = receiver().await;
    let sub = "/v1/stream/__ds/subscriptions/nodes-hook";
    let (status, _) = json(a.put(sub).json(&webhook_sub(&hook, 30_000))).await;
    assert_eq!(status, 201);

    // Created through A, matched by an append made through B (a new stream).
    let res = b
        .put("/v1/stream/jobs/1")
        .header("content-type", "text/plain")
        .body("one;")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let first = deliveries(&received, 1, Duration::from_secs(10)).await[0].clone();
    assert_eq!(first["generation"], 1);
    assert_eq!(first["streams"][0]["path"], "jobs/1");
    assert_eq!(first["streams"][0]["has_pending"], true);

    // While the lease is held, a new stream and appends through both nodes issue no wake.
    let res = b
        .put("/v1/stream/jobs/2")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        let res = node
            .post(&format!("/v1/stream/jobs/{}", 1 + i % 2))
            .header("content-type", "text/plain")
            .body(format!("more{i};"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }

    // Done through B (the callback URL names A): more work is pending, so exactly one new
    // wake follows, from whichever node.
    let callback = on_node(first["callback_url"].as_str().unwrap(), &b.url(""));
    let token = first["callback_token"].as_str().unwrap();
    let body =
        j!({"wake_id": first["wake_id"], "generation": 1, "acks": tails(&first), "done": true});
    let (status, answer) = ack(&callback, token, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["next_wake"], true);
    // Replayed through A: fenced.
    let (status, answer) = ack(first["callback_url"].as_str().unwrap(), token, body).await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (409, j!("FENCED"))
    );

    let second = deliveries(&received, 2, Duration::from_secs(10)).await[1].clone();
    assert_eq!(second["generation"], 2);
    let paths: Vec<&str> = second["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["jobs/1", "jobs/2"]);
    let body =
        j!({"wake_id": second["wake_id"], "generation": 2, "acks": tails(&second), "done": true});
    let token = second["callback_token"].as_str().unwrap();
    let (status, answer) = ack(second["callback_url"].as_str().unwrap(), token, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["next_wake"], false);

    // Both nodes report the acked cursors.
    for node in [&a, &b] {
        let (status, view) = json(node.get(sub)).await;
        assert_eq!(status, 200);
        assert_eq!(view["generation"], 2);
        for s in second["streams"].as_array().unwrap() {
            let link = view["streams"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["path"] == s["path"])
                .unwrap();
            assert_eq!(link["acked_offset"], s["tail_offset"]);
        }
    }

    // A last append through A: generation 3 is the next delivery, and no wake was ever
    // delivered twice (one delivery per generation, in order).
    let res = a
        .post("/v1/stream/jobs/1")
        .header("content-type", "text/plain")
        .body("last;")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let all = deliveries(&received, 3, Duration::from_secs(10)).await;
    let generations: Vec<u64> = all
        .iter()
        .map(|w| w["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(generations, [1, 2, 3]);
    assert_eq!(
        b.delete(sub).send().await.unwrap().status(),
        204,
        "deleted through the other node"
    );
    assert_eq!(a.get(sub).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_wake_claims_and_acks_through_either_node() {
    let (_redis, a, b) = two_nodes().await;
    let wake_stream = "/v1/stream/wake/pool";
    let res = a
        .put(wake_stream)
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let sub = "/v1/stream/__ds/subscriptions/nodes-pull";
    let spec = j!({"type": "pull-wake", "pattern": "jobs/*", "wake_stream": "wake/pool",
                   "lease_ttl_ms": 30_000});
    let (status, _) = json(b.put(sub).json(&spec)).await;
    assert_eq!(status, 201);

    let res = a
        .put("/v1/stream/jobs/p")
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // The wake event reaches the wake stream once, read through the other node.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let (status, events) = json(b.get(wake_stream)).await;
        assert_eq!(status, 200);
        if !events.as_array().unwrap().is_empty() {
            break events;
        }
        assert!(Instant::now() < deadline, "no wake event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events[0]["generation"], 1);

    let claim = |node: &TestServer, worker: &str| {
        node.post(&format!("{sub}/claim"))
            .json(&j!({ "worker": worker }))
    };
    // Eight workers claim at once through both nodes: exactly one gets the lease.
    let claims = (0..8).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        let worker = format!("w{i}");
        async move { (worker.clone(), json(claim(node, &worker)).await) }
    });
    let answers = futures_util::future::join_all(claims).await;
    let won: Vec<&(String, (u16, Value))> = answers
        .iter()
        .filter(|(_, (status, _))| *status == 200)
        .collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    let (winner, (_, claimed)) = won[0].clone();
    assert_eq!(claimed["generation"], 1);
    assert_eq!(claimed["wake_id"], events[0]["wake_id"]);
    for (_, (status, busy)) in answers.iter().filter(|(w, _)| *w != winner) {
        assert_eq!(*status, 409, "{busy}");
        assert_eq!(busy["error"]["code"], "ALREADY_CLAIMED");
        assert_eq!(busy["error"]["current_holder"], j!(winner));
    }
    let body = j!({"wake_id": claimed["wake_id"], "generation": 1,
                   "acks": tails(&claimed), "done": true});
    let token = claimed["token"].as_str().unwrap();
    let (status, answer) = ack(&b.url(&format!("{sub}/ack")), token, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["next_wake"], false);
    let (status, _) = ack(&a.url(&format!("{sub}/ack")), token, body).await;
    assert_eq!(status, 409, "fenced on the other node too");
    let (_, view) = json(a.get(sub)).await;
    assert_eq!(
        view["streams"][0]["acked_offset"],
        claimed["streams"][0]["tail_offset"]
    );
}

/// A `sessiond serve` process on the Redis engine; killed (SIGKILL) on drop.
struct Node {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(redis: &RedisServer) -> Node {
    spawn_node_with(redis, &[])
}

fn spawn_node_with(redis: &RedisServer, extra: &[(&'static str, String)]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let redis_url = redis.url();
    let args = ["--engine", "redis", "--redis-url", &redis_url, "--data-dir"];
    let args = args.map(OsStr::new).into_iter();
    let env = [
        (
            "SESSIOND_STREAMS__ALLOW_INSECURE_WEBHOOKS",
            "true".to_owned(),
        ),
        binary::shared_signing_key(),
    ];
    let env: Vec<_> = env.into_iter().chain(extra.iter().cloned()).collect();
    let (child, base) = binary::serve(args.chain([dir.path().as_os_str()]), &env);
    Node {
        child,
        base,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_wake_is_redelivered_by_another_after_the_lease() {
    let redis = RedisServer::start();
    let a = spawn_node(&redis);
    let b = spawn_node(&redis);
    let http = reqwest::Client::new();
    let (hook, received) = receiver().await;
    let sub = "/v1/stream/__ds/subscriptions/nodes-takeover";
    let (status, _) = json(
        http.put(format!("{}{sub}", b.base))
            .json(&webhook_sub(&hook, 1_000)),
    )
    .await;
    assert_eq!(status, 201);

    // The append through A makes A issue (and hold) the wake; nobody acks it.
    let res = http
        .put(format!("{}/v1/stream/jobs/t", a.base))
        .header("content-type", "text/plain")
        .body("work;")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let first = deliveries(&received, 1, Duration::from_secs(10)).await[0].clone();
    assert_eq!(first["generation"], 1);
    drop(a); // kill -9

    // B takes the lapsed lease over: a new generation, the same pending stream.
    let started = Instant::now();
    let all = deliveries(&received, 2, Duration::from_secs(20)).await;
    let next = all.last().unwrap();
    assert!(
        next["generation"].as_u64().unwrap() > 1,
        "a new generation: {next}"
    );
    assert_eq!(next["streams"][0]["path"], "jobs/t");
    assert_eq!(next["streams"][0]["has_pending"], true);
    assert!(started.elapsed() < Duration::from_secs(15));
    // The dead node's wake is fenced; the new one acks through the survivor.
    let old = j!({"wake_id": first["wake_id"], "generation": 1, "acks": [], "done": true});
    let (status, _) = ack(
        &on_node(first["callback_url"].as_str().unwrap(), &b.base),
        first["callback_token"].as_str().unwrap(),
        old,
    )
    .await;
    assert_eq!(status, 409);
    let body = j!({"wake_id": next["wake_id"], "generation": next["generation"],
                   "acks": tails(next), "done": true});
    let (status, answer) = ack(
        &on_node(next["callback_url"].as_str().unwrap(), &b.base),
        next["callback_token"].as_str().unwrap(),
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["next_wake"], false);
}

/// `object_load` round trips of a node so far (the index-version reads are among them).
async fn object_loads(http: &reqwest::Client, base: &str) -> u64 {
    let series = "sessiond_engine_redis_round_trips_total{op=\"object_load\"}";
    binary::metric(http, base, series).await as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_checks_are_spaced_and_a_new_subscription_still_matches_the_next_append() {
    const CHECK_MS: u64 = 250;
    const APPENDS: u64 = 400;
    let redis = RedisServer::start();
    let env = [(
        "SESSIOND_STREAMS__SUBSCRIPTIONS__INDEX_CHECK_MS",
        CHECK_MS.to_string(),
    )];
    let a = spawn_node_with(&redis, &env);
    let b = spawn_node_with(&redis, &env);
    let http = reqwest::Client::new();
    let stream = format!("{}/v1/stream/busy/one", b.base);
    let res = http
        .put(&stream)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // Appends through B (16 at a time): observed, as another node may subscribe any time.
    let before = object_loads(&http, &b.base).await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (http, stream) = (http.clone(), stream.clone());
        tasks.spawn(async move {
            for i in 0..APPENDS / 16 {
                let res = http
                    .post(&stream)
                    .header("content-type", "text/plain")
                    .body(format!("{w}.{i};"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 204);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed().as_millis() as u64;
    let loads = object_loads(&http, &b.base).await - before;
    // One check when the first append is seen, then at most one per interval (plus the one
    // that may run while the metrics are read).
    assert!(
        loads <= 2 + elapsed / CHECK_MS,
        "{loads} object reads for {APPENDS} appends in {elapsed} ms"
    );

    // Right after those checks: a subscription created through A matches B's next append
    // (the append waits for B's next check instead of being missed).
    let (hook, received) = receiver().await;
    let sub = "/v1/stream/__ds/subscriptions/spaced";
    let (status, _) = json(
        http.put(format!("{}{sub}", a.base))
            .json(&webhook_sub(&hook, 30_000)),
    )
    .await;
    assert_eq!(status, 201);
    let res = http
        .put(format!("{}/v1/stream/jobs/after", b.base))
        .header("content-type", "text/plain")
        .body("late;")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let wake = deliveries(&received, 1, Duration::from_secs(10)).await[0].clone();
    assert_eq!(wake["streams"][0]["path"], "jobs/after");
}
