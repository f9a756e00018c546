//! Each security event is in each of its streams exactly once, whatever the relay does twice:
//! on SQLite, the real binary finds events in its outbox that are already in the streams (the
//! state a SIGKILL between "appended" and "removed from the outbox" leaves, rebuilt exactly
//! from the outbox rows the process had committed); on Redis, two nodes relay one outbox at
//! the same time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/security_changes.rs"]
mod security_changes;

use binary::Binary;
use security_changes::user_stream;

const KEY: &str = "relay-once-key-0123456789abcdef0123";
const USERS: usize = 3;

fn env(extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![("SESSIOND_API_KEYS", KEY.to_string())];
    for (k, v) in extra {
        env.push((leak(k), v.to_string()));
    }
    env
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// Every message of stream `path` on `base` (empty if it does not exist).
async fn read(http: &reqwest::Client, base: &str, path: &str) -> Vec<Value> {
    security_changes::events(http, &format!("{base}{path}"), KEY).await
}

/// How often each event id occurs in `events`.
fn occurrences(events: &[Value]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for e in events {
        *seen
            .entry(e["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    seen
}

/// Creates a session of `user` on `base`, revoking it when `revoke`; returns its id.
async fn change(http: &reqwest::Client, base: &str, user: &str, revoke: bool) -> String {
    let res = http
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(KEY)
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    if revoke {
        let res = http
            .delete(format!("{base}/v1/sessions/{id}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    id
}

/// Every security stream of the test's users and the global one, read from `base`.
async fn all_streams(http: &reqwest::Client, base: &str) -> Vec<(String, Vec<Value>)> {
    let mut streams = vec![(
        "global".to_string(),
        read(http, base, "/v1/stream/__security/all").await,
    )];
    for u in 0..USERS {
        let user = format!("once-{u}");
        let events = read(http, base, &user_stream(&user)).await;
        streams.push((user, events));
    }
    streams
}

/// Polls until the streams hold `want` events in all (global plus per user), or fails
/// showing the warnings `node` logged.
async fn until_delivered(http: &reqwest::Client, node: &Binary, want: usize) {
    let base = &node.base;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: usize = all_streams(http, base)
            .await
            .iter()
            .map(|(_, e)| e.len())
            .sum();
        if got >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {want} events delivered; warnings: {:#?}",
            node.logs
                .lines()
                .iter()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_each_once(streams: &[(String, Vec<Value>)], per_stream_total: usize) {
    let mut total = 0;
    for (name, events) in streams {
        let twice: Vec<_> = occurrences(events)
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .collect();
        assert!(twice.is_empty(), "{name}: events appended twice: {twice:?}");
        total += events.len();
    }
    assert_eq!(total, per_stream_total, "every event once in each stream");
}

fn outbox_rows(db: &std::path::Path) -> Vec<(i64, Vec<u8>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, data FROM outbox ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The SQLite outbox holds events the streams already have (the relay appended them, and the
/// process died before it removed them): the next relay pass appends none of them again.
/// The state is produced exactly: a first run queues events without relaying them (its relay
/// lingers far longer than the test) and is killed; its outbox rows are read from the file;
/// a second run delivers them and is killed once the outbox is empty; the saved rows are put
/// back with their own sequence numbers, which is what the outbox held had the second run
/// died between its appends and its removal. The third run relays them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_outbox_events_are_not_appended_twice_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessiond.db");
    let http = reqwest::Client::new();
    let lingering = env(&[("SESSIOND_SECURITY__RELAY_LINGER_MS", "600000")]);
    let first = Binary::spawn(dir.path(), &lingering);
    for i in 0..9 {
        change(
            &http,
            &first.base,
            &format!("once-{}", i % USERS),
            i % 3 == 0,
        )
        .await;
    }
    first.kill();
    // (Of 9 creations and 3 revocations; a pass that started before the first change
    // lingered may have relayed a few.)
    let queued = outbox_rows(&db);
    assert!(!queued.is_empty(), "the first run left events queued");
    // Each user's secret committed with the user's first change, not in a relay pass.
    let secrets: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM objects WHERE kind = 'security-secret'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        secrets, USERS as i64,
        "one secret per user, with the changes"
    );

    let second = Binary::spawn(dir.path(), &env(&[]));
    until_delivered(&http, &second, 24).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !outbox_rows(&db).is_empty() {
        assert!(Instant::now() < deadline, "the outbox is emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = all_streams(&http, &second.base).await;
    assert_each_once(&delivered, 24);
    second.kill();

    // Back into the outbox, as a crash before the removal would have left them.
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (seq, data) in &queued {
        conn.execute(
            "INSERT INTO outbox (seq, data) VALUES (?1, ?2)",
            rusqlite::params![seq, data],
        )
        .unwrap();
    }
    drop(conn);

    let third = Binary::spawn(dir.path(), &env(&[]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !outbox_rows(&db).is_empty() {
        assert!(Instant::now() < deadline, "the replay is relayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = all_streams(&http, &third.base).await;
    assert_each_once(&after, 24);
    assert_eq!(after, delivered, "the replay appended nothing");
    let refused = binary::metric(
        &http,
        &third.base,
        "sessiond_security_events_deduplicated_total",
    )
    .await;
    // On SQLite each event's user copy was written with its change (not queued): an outbox
    // entry holds the global copy only.
    let copies = queued.len();
    assert_eq!(
        refused, copies as f64,
        "every replayed copy refused by its stream"
    );
    // New events still go through after the replay.
    change(&http, &third.base, "once-0", false).await;
    until_delivered(&http, &third, 26).await;
    assert_each_once(&all_streams(&http, &third.base).await, 26);
    third.stop();
}

/// Two nodes on one Redis relay the same outbox concurrently (each wakes on its own changes
/// and polls for the other's): every event is in its streams once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relaying_nodes_append_each_event_once_on_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let fast = env(&[("SESSIOND_SECURITY__RELAY_LINGER_MS", "1")]);
    let nodes = [
        Binary::spawn_on_redis(&url, &[], &fast),
        Binary::spawn_on_redis(&url, &[], &fast),
    ];
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (http, base) = (http.clone(), nodes[i % 2].base.clone());
        tasks.push(tokio::spawn(async move {
            change(&http, &base, &format!("once-{}", i % USERS), i % 3 == 0).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 60 creations, 20 revocations, each in a user stream and the global one.
    let want = 160;
    until_delivered(&http, &nodes[0], want).await;
    // Both nodes stop (each relays what is left on its way out); a third reads.
    let [a, b] = nodes;
    a.stop();
    b.stop();
    let reader = Binary::spawn_on_redis(&url, &[], &fast);
    assert_each_once(&all_streams(&http, &reader.base).await, want);
    reader.stop();
}
