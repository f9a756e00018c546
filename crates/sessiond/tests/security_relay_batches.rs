//! The security relay appends one request per stream and outbox queue (a run of events), yet
//! each event is in each of its streams once, whatever batch boundaries other passes used:
//! relays with different batch sizes racing over one outbox, and a pass that replays what a
//! relay with other boundaries appended before dying ahead of its outbox removal. Real
//! engines (a SQLite file, a private redis-server with two "nodes": two engine handles and two
//! streams services), the server's own relay (`sessiond::security::Relay`). On Redis, with
//! events in several outbox queues (one per slot), the global stream gets one request per
//! queue and pass, counted by the relay's metric.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use sessiond::security::{Relay, Secrets};
use sessiond_engine_redis::testing::RedisServer;
use sessiond_engine_redis::{RedisEngine, RedisOptions};
use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_runtime::ObjectKind;
use sessiond_sessions::security::{user_stream, SecurityConfig, SecurityEvents, GLOBAL_STREAM};
use sessiond_store::{
    Durability, ObjectStore, Outbox, OutboxItem, Result, SessionStore, StoreError, StreamStore,
};
use sessiond_streams::{NoCold, Streams, StreamsConfig};

const USERS: usize = 3;

/// One process's view of the engine: its outbox, objects and streams service.
#[derive(Clone)]
struct Node {
    outbox: Arc<dyn Outbox>,
    objects: Arc<dyn ObjectStore>,
    sessions: Arc<dyn SessionStore>,
    streams: Streams,
}

impl Node {
    fn new<E>(engine: Arc<E>, exclusive: bool) -> Node
    where
        E: Outbox + ObjectStore + SessionStore + StreamStore + 'static,
    {
        let streams = Streams::new(
            engine.clone(),
            Arc::new(NoCold),
            ObjectKind::in_memory("stream"),
            StreamsConfig::default(),
            exclusive,
        );
        Node {
            outbox: engine.clone(),
            objects: engine.clone(),
            sessions: engine,
            streams,
        }
    }

    /// A relay of this node reading `batch` events per pass from `outbox`.
    fn relay(&self, batch: usize, outbox: Arc<dyn Outbox>) -> Relay {
        let config = SecurityConfig {
            relay_batch: batch,
            ..SecurityConfig::default()
        };
        let events = SecurityEvents::new(config, self.objects.clone()).with_outbox(outbox.clone());
        Relay::new(
            outbox,
            self.streams.clone(),
            Secrets::new(self.objects.clone()),
            events,
        )
    }
}

/// An outbox whose removal fails: the relay appended, then "died" before forgetting.
struct DiesBeforeRemoval(Arc<dyn Outbox>);

#[async_trait]
impl Outbox for DiesBeforeRemoval {
    async fn outbox_push(&self, events: Vec<Vec<u8>>, durability: Durability) -> Result<()> {
        self.0.outbox_push(events, durability).await
    }
    async fn outbox_read(&self, limit: usize) -> Result<Vec<OutboxItem>> {
        self.0.outbox_read(limit).await
    }
    async fn outbox_remove(&self, _: &[String]) -> Result<()> {
        Err(StoreError::Unavailable("killed before the removal".into()))
    }
}

fn user(i: usize) -> String {
    format!("batch-user-{}", i % USERS)
}

/// The queued form of event `i` (`at = i`) of `user`'s session `session`.
fn envelope(i: usize, kind: &str, user: &str, session: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "stream": user_stream(user),
        "user_id": user,
        "event": {
            "id": format!("event-{i}"),
            "type": kind,
            "at": i,
            "user_id": user,
            "session_id": session,
        },
    }))
    .unwrap()
}

/// Queues events `from..to` (a session created for user `i % USERS` each).
async fn queue(outbox: &dyn Outbox, from: usize, to: usize) {
    let events = (from..to)
        .map(|i| envelope(i, "session.created", &user(i), &format!("session-{i}")))
        .collect();
    outbox
        .outbox_push(events, Durability::Confirmed)
        .await
        .unwrap();
}

async fn read(streams: &Streams, path: &str) -> Vec<Value> {
    let res = sessiond_streams::read::read(streams, path, &HeaderMap::new(), Some("offset=-1"))
        .await
        .unwrap();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Asserts that the global stream holds events `0..n` once each, in order within the
/// queue, and each user's stream that user's events once each.
async fn assert_each_once(streams: &Streams, n: usize) {
    let ids = |events: &[Value]| -> Vec<usize> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap()["event-".len()..].parse().unwrap())
            .collect()
    };
    let global = ids(&read(streams, GLOBAL_STREAM).await);
    assert_eq!(global, (0..n).collect::<Vec<_>>(), "global stream");
    for u in 0..USERS {
        let got = ids(&read(streams, &user_stream(&user(u))).await);
        let want: Vec<usize> = (0..n).filter(|i| i % USERS == u).collect();
        assert_eq!(got, want, "stream of {}", user(u));
    }
}

/// Relay `b` (5 events a pass) delivers a first part; relay `a` (3 a pass) appends the next 3
/// and dies before its removal; `b`, whose memory of the streams is now behind, replays from
/// there with its own boundaries (5..9, then 10..11). Without the expected-epoch guard its
/// first run (epoch = position of event 9, above the stream's) would append 5..7 again.
async fn replay_with_other_boundaries(a: &Node, b: &Node) {
    let relay_b = b.relay(5, b.outbox.clone());
    queue(b.outbox.as_ref(), 0, 4).await;
    relay_b.flush().await.unwrap();
    queue(b.outbox.as_ref(), 4, 12).await;
    let dying = a.relay(3, Arc::new(DiesBeforeRemoval(a.outbox.clone())));
    assert!(dying.flush().await.is_err(), "the removal fails");
    assert_eq!(
        read(&a.streams, GLOBAL_STREAM).await.len(),
        7,
        "4 + 3 appended"
    );
    relay_b.flush().await.unwrap();
    assert!(b.outbox.outbox_read(1).await.unwrap().is_empty());
    assert_each_once(&b.streams, 12).await;
    assert_each_once(&a.streams, 12).await;
}

/// Relays passing over their outboxes in a loop, racing each other, until `finish`.
struct Racing {
    done: Arc<AtomicBool>,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

impl Racing {
    fn start(relays: impl IntoIterator<Item = Relay>) -> Racing {
        let done = Arc::new(AtomicBool::new(false));
        let relays = relays
            .into_iter()
            .map(|relay| {
                let done = done.clone();
                tokio::spawn(async move {
                    loop {
                        let finished = done.load(Ordering::SeqCst);
                        relay.flush().await.unwrap();
                        if finished {
                            return;
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        Racing { done, relays }
    }

    /// Stops the relays after one more pass each, then relays what is left through `node`.
    async fn finish(self, node: &Node) {
        self.done.store(true, Ordering::SeqCst);
        for r in self.relays {
            r.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.outbox.outbox_read(1).await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the outbox drains");
            node.relay(16, node.outbox.clone()).flush().await.unwrap();
        }
    }
}

/// Relays of 2, 3 and 7 events a pass run passes over one outbox while events are queued:
/// each pass starts where its memory of the streams says, often behind the others.
async fn racing_relays(nodes: &[Node; 2]) {
    const EVENTS: usize = 150;
    let relays = [2, 3, 7].into_iter().enumerate().map(|(i, batch)| {
        let node = &nodes[i % 2];
        node.relay(batch, node.outbox.clone())
    });
    let racing = Racing::start(relays);
    for from in (0..EVENTS).step_by(5) {
        queue(nodes[0].outbox.as_ref(), from, from + 5).await;
        tokio::task::yield_now().await;
    }
    racing.finish(&nodes[0]).await;
    assert_each_once(&nodes[0].streams, EVENTS).await;
    assert_each_once(&nodes[1].streams, EVENTS).await;
}

fn sqlite() -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    (dir, Node::new(engine, true))
}

async fn redis_nodes(redis: &RedisServer) -> [Node; 2] {
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let engine = RedisEngine::connect(&redis.url(), RedisOptions::default())
            .await
            .unwrap();
        nodes.push(Node::new(engine, false));
    }
    nodes.try_into().ok().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_other_batch_boundaries_appends_each_event_once_on_sqlite() {
    let (_dir, node) = sqlite();
    replay_with_other_boundaries(&node, &node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_other_batch_boundaries_appends_each_event_once_on_redis() {
    let redis = RedisServer::start();
    let [a, b] = redis_nodes(&redis).await;
    replay_with_other_boundaries(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_racing_with_different_batch_sizes_append_each_event_once_on_sqlite() {
    let (_dir, node) = sqlite();
    racing_relays(&[node.clone(), node]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_racing_with_different_batch_sizes_append_each_event_once_on_redis() {
    let redis = RedisServer::start();
    racing_relays(&redis_nodes(&redis).await).await;
}

/// Sessions whose events the next tests queue: on Redis each session's events go to the
/// outbox queue of its slot, so these fixed ids spread them over several queues.
const SESSIONS: usize = 4;

fn session_user(s: usize) -> String {
    format!("queues-user-{s}")
}

/// Queues events `from..to` the way the session service does, with the session change they
/// record: event `i` is a write of session `i % SESSIONS` (its first one creates it), `at = i`,
/// so the queues alternate in `at` order and a stream ordered by `at` changes queue at every
/// event.
async fn queue_in_sessions(sessions: &dyn SessionStore, from: usize, to: usize) {
    let now = sessiond_store::now_ms();
    for i in from..to {
        let (s, id) = (i % SESSIONS, format!("queues-session-{}", i % SESSIONS));
        let user = session_user(s);
        let event = envelope(i, "session.context_changed", &user, &id);
        let version = (i / SESSIONS) as u64 + 1;
        let record = sessiond_store::SessionRecord {
            id,
            user_id: Some(user),
            data: format!(r#"{{"n":{i}}}"#),
            device: None,
            created_at: now,
            updated_at: now,
            last_seen_at: now,
            idle_ttl_ms: 3_600_000,
            idle_expires_at: now + 3_600_000,
            absolute_expires_at: now + 7_200_000,
            version,
            auth_time: now,
            origin: sessiond_store::SessionOrigin::Service,
        };
        let c = Durability::Confirmed;
        if version == 1 {
            assert!(sessions
                .insert_session_with(&record, Some(event), c)
                .await
                .unwrap());
        } else {
            let written = sessions
                .replace_session(
                    sessiond_store::RecordWrite::new(&record, version - 1, now)
                        .event(Some(event))
                        .durability(c),
                )
                .await
                .unwrap();
            assert_eq!(written, sessiond_store::Cas::Written, "write {i}");
        }
    }
}

/// Asserts that the global stream holds events `0..n` once each, each session's (each
/// queue's) in order, and each session's user stream exactly its events in order.
async fn assert_each_once_per_queue(streams: &Streams, n: usize) {
    let ids = |events: Vec<Value>| -> Vec<usize> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap()["event-".len()..].parse().unwrap())
            .collect()
    };
    let global = ids(read(streams, GLOBAL_STREAM).await);
    let mut sorted = global.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..n).collect::<Vec<_>>(),
        "global stream: {global:?}"
    );
    for s in 0..SESSIONS {
        let want: Vec<usize> = (0..n).filter(|i| i % SESSIONS == s).collect();
        let in_global: Vec<usize> = global
            .iter()
            .copied()
            .filter(|i| i % SESSIONS == s)
            .collect();
        assert_eq!(
            in_global, want,
            "queue order of session {s} in the global stream"
        );
        let got = ids(read(streams, &user_stream(&session_user(s))).await);
        assert_eq!(got, want, "stream of {}", session_user(s));
    }
}

/// `sessiond_security_relay_requests_total{stream="global"}` as `recorder` holds it.
fn global_requests(handle: &metrics_exporter_prometheus::PrometheusHandle) -> usize {
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(r#"sessiond_security_relay_requests_total{stream="global"} "#))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The distinct outbox queues holding events now.
async fn queues(outbox: &dyn Outbox) -> usize {
    let items = outbox.outbox_read(10_000).await.unwrap();
    items
        .iter()
        .map(|item| item.queue.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// Events of several queues, alternating in `at` order: a pass appends them to the global
/// stream with at most one request per queue (one per event before the global stream was
/// grouped by queue), also when it replays what a relay that died mid-pass appended, and
/// relays racing on two nodes append each event once. The requests are counted by the relay's
/// own metric, on a recorder local to this test's thread (a current-thread runtime: the relay's
/// tasks run here too).
#[tokio::test]
async fn global_stream_takes_one_request_per_queue_and_each_event_once_on_redis() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let redis = RedisServer::start();
    let [a, b] = redis_nodes(&redis).await;
    const BATCH: usize = 4 * SESSIONS;

    // A clean pass: at most one global request per queue, not one per event.
    queue_in_sessions(a.sessions.as_ref(), 0, BATCH).await;
    let q = queues(a.outbox.as_ref()).await;
    assert!(q >= 3, "the sessions' events are in {q} queues");
    let relay_b = b.relay(1000, b.outbox.clone());
    let before = global_requests(&handle);
    relay_b.flush().await.unwrap();
    let requests = global_requests(&handle) - before;
    assert!(
        requests <= q,
        "{requests} global requests for {BATCH} events in {q} queues"
    );
    assert_each_once_per_queue(&b.streams, BATCH).await;

    // A relay on node a dies after appending part of a pass (its batch ends inside the second
    // queue); node b's relay, which did not see that, replays the whole pass: the queues a
    // appended are refused once and skipped, each once more for the rest at most.
    queue_in_sessions(a.sessions.as_ref(), BATCH, 2 * BATCH).await;
    let dying = a.relay(
        BATCH / SESSIONS + 2,
        Arc::new(DiesBeforeRemoval(a.outbox.clone())),
    );
    assert!(dying.flush().await.is_err(), "the removal fails");
    let before = global_requests(&handle);
    relay_b.flush().await.unwrap();
    let requests = global_requests(&handle) - before;
    assert!(
        requests <= 2 * q,
        "{requests} global requests for a replay over {q} queues"
    );
    assert!(b.outbox.outbox_read(1).await.unwrap().is_empty());
    assert_each_once_per_queue(&a.streams, 2 * BATCH).await;

    // Relays on both nodes, with different batch sizes, race while sessions change.
    let racing = Racing::start(
        [(&a, 3), (&b, 7), (&a, 1000)].map(|(n, batch)| n.relay(batch, n.outbox.clone())),
    );
    const END: usize = 2 * BATCH + 60;
    for from in (2 * BATCH..END).step_by(3) {
        queue_in_sessions(b.sessions.as_ref(), from, from + 3).await;
        tokio::task::yield_now().await;
    }
    racing.finish(&a).await;
    assert_each_once_per_queue(&a.streams, END).await;
    assert_each_once_per_queue(&b.streams, END).await;
}
