//! The security relay on two sessiond binaries sharing one Redis (issue 10): one node's relay
//! moves the events at a time (the relay lease), the other makes no stream request; when the
//! holder is killed with SIGKILL the other takes over once the lease ran out, and when it stops
//! cleanly it hands the lease over at once. Every event is in its streams exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sessiond_engine_redis::testing::RedisServer;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/security_changes.rs"]
mod security_changes;

use binary::{metric, Binary};
use security_changes::{changes, events, user_stream, wait_for_all, Acked, USERS};

const KEY: &str = "relay-lease-security-key-0123456789ab";
const REQUESTS: &str = "sessiond_security_relay_requests_total";
const HELD: &str = "sessiond_security_relay_lease_held";

fn node(redis: &RedisServer, lease_ms: u64) -> Binary {
    Binary::spawn_on_redis(
        &redis.url(),
        &[],
        &[
            ("SESSIOND_API_KEYS", KEY.into()),
            ("SESSIOND_SECURITY__RELAY_LEASE_MS", lease_ms.to_string()),
        ],
    )
}

/// Polls until one of `nodes` holds the relay lease (its gauge is 1); returns its index.
async fn holder(http: &reqwest::Client, nodes: &[&Binary], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if metric(http, &n.base, HELD).await == 1.0 {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no node took the relay lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of `acked` is in its user's stream and in the global stream exactly once
/// (read through `base`, after `wait_for_all`). The global stream is waited for too: a pass
/// appends the user streams and the global one concurrently, so the user streams may be
/// complete while the pass's global append is still on its way.
async fn exactly_once(http: &reqwest::Client, base: &str, acked: &[Acked]) {
    let ours: HashMap<&str, &Acked> = acked.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut streams: Vec<String> = (0..USERS)
        .map(|n| user_stream(&format!("k9-{n}")))
        .collect();
    streams.push("/v1/stream/__security/all".into());
    let deadline = Instant::now() + Duration::from_secs(60);
    for path in streams {
        let global = path.ends_with("/all");
        let expected = security_changes::event_count(acked);
        let seen = loop {
            let got = events(http, &format!("{base}{path}"), KEY).await;
            let mut seen: HashMap<(String, String), usize> = HashMap::new();
            for e in &got {
                let session = e["session_id"].as_str().unwrap_or_default();
                if ours.contains_key(session) {
                    let kind = e["type"].as_str().unwrap_or_default().to_string();
                    *seen.entry((kind, session.to_string())).or_default() += 1;
                }
            }
            if !global || seen.len() >= expected || Instant::now() >= deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "events not once in {path}: {twice:?}");
        if global {
            assert_eq!(seen.len(), expected, "every event in the global stream");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_relays_while_both_run_and_each_event_lands_once() {
    let redis = RedisServer::start();
    let http = reqwest::Client::new();
    let (a, b) = (node(&redis, 5_000), node(&redis, 5_000));
    // Changes through both nodes, concurrently: both queue events in the one outbox.
    let (on_a, on_b) = tokio::join!(
        changes(&http, &a.base, KEY, 30, true),
        changes(&http, &b.base, KEY, 30, true)
    );
    let acked: Vec<Acked> = on_a.into_iter().chain(on_b).collect();
    wait_for_all(&http, &a.base, KEY, &acked).await;
    exactly_once(&http, &b.base, &acked).await;
    let requests = [
        metric(&http, &a.base, REQUESTS).await,
        metric(&http, &b.base, REQUESTS).await,
    ];
    let held = [
        metric(&http, &a.base, HELD).await,
        metric(&http, &b.base, HELD).await,
    ];
    assert!(
        requests.iter().filter(|r| **r > 0.0).count() == 1,
        "exactly one node's relay wrote the streams: requests {requests:?}, held {held:?}, {} sessions",
        acked.len()
    );
    let relaying = usize::from(requests[0] == 0.0);
    assert_eq!(held[relaying], 1.0, "the relaying node holds the lease");
    assert_eq!(held[1 - relaying], 0.0, "the other does not");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_replaced_after_the_lease_and_nothing_is_lost_or_doubled() {
    const LEASE_MS: u64 = 1_500;
    let redis = RedisServer::start();
    let http = reqwest::Client::new();
    let nodes = vec![node(&redis, LEASE_MS), node(&redis, LEASE_MS)];
    let refs: Vec<&Binary> = nodes.iter().collect();
    let first = holder(&http, &refs, Duration::from_secs(20)).await;
    let before = changes(&http, &nodes[first].base, KEY, 20, true).await;
    wait_for_all(&http, &nodes[1 - first].base, KEY, &before).await;
    let mut nodes = nodes;
    let survivor = nodes.remove(1 - first);
    let idle = metric(&http, &survivor.base, REQUESTS).await;
    assert_eq!(idle, 0.0, "the node without the lease relayed nothing");
    let killed = Instant::now();
    nodes.pop().unwrap().kill(); // SIGKILL: the lease is not released, it must run out.
                                 // Events queued after the death wait in the outbox until the survivor takes over.
    let after = changes(&http, &survivor.base, KEY, 20, true).await;
    let refs = [&survivor];
    holder(&http, &refs, Duration::from_secs(20)).await;
    let took = killed.elapsed();
    // The lease runs out LEASE_MS after the last renewal; the survivor tries at its next
    // wake (at most a second later); the rest is this test's own polling on a busy machine.
    assert!(
        took < Duration::from_millis(LEASE_MS) + Duration::from_secs(4),
        "took over after {took:?}"
    );
    wait_for_all(&http, &survivor.base, KEY, &after).await;
    let all: Vec<Acked> = before.into_iter().chain(after).collect();
    exactly_once(&http, &survivor.base, &all).await;
    survivor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holder_hands_the_lease_over_at_once() {
    // A lease far longer than the test: only the release at shutdown lets the other take it.
    const LEASE_MS: u64 = 600_000;
    let redis = RedisServer::start();
    let http = reqwest::Client::new();
    let mut nodes = vec![node(&redis, LEASE_MS), node(&redis, LEASE_MS)];
    let refs: Vec<&Binary> = nodes.iter().collect();
    let first = holder(&http, &refs, Duration::from_secs(20)).await;
    let other = nodes.remove(1 - first);
    nodes.pop().unwrap().stop();
    let after = changes(&http, &other.base, KEY, 10, true).await;
    holder(&http, &[&other], Duration::from_secs(20)).await;
    wait_for_all(&http, &other.base, KEY, &after).await;
    exactly_once(&http, &other.base, &after).await;
    other.stop();
}
