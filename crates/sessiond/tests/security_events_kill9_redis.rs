//! The real binary on Redis (`appendonly yes`, `appendfsync always`), killed with SIGKILL
//! while the security events of its acknowledged session changes are still queued, then
//! Redis itself killed with SIGKILL and restarted: a new sessiond delivers every one of those
//! events. The event was written in the same Lua script as its change, into the outbox, so
//! it is on disk whenever the change is acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sessiond_engine_redis::testing::RedisServer;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/security_changes.rs"]
mod security_changes;

use binary::{metric, Binary};
use security_changes::{changes, event_count, wait_for_all};

const KEY: &str = "kill-9-redis-security-key-0123456789";

/// A node whose relay, once woken by a change, waits `linger_ms` before its pass: with a
/// long linger the acknowledged changes' events stay queued until the process is killed.
fn node(redis: &RedisServer, linger_ms: u64) -> Binary {
    Binary::spawn_on_redis(
        &redis.url(),
        &[],
        &[
            ("SESSIOND_API_KEYS", KEY.into()),
            ("SESSIOND_SECURITY__RELAY_LINGER_MS", linger_ms.to_string()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_events_survive_kill_9_of_sessiond_and_of_redis() {
    let mut redis = RedisServer::start_durable();
    let http = reqwest::Client::new();
    let first = node(&redis, 600_000);
    let acked = changes(&http, &first.base, KEY, 60, true).await;
    // The precondition, observed: the relay has delivered (almost) nothing of it.
    let relayed = metric(&http, &first.base, "sessiond_security_events_relayed_total").await;
    assert!(
        relayed < (event_count(&acked) / 2) as f64,
        "the relay ran before the kill ({relayed} relayed): the test proves nothing"
    );
    first.kill(); // SIGKILL: no shutdown pass of the relay.
    redis.kill9();
    redis.restart();

    let second = node(&redis, 100);
    wait_for_all(&http, &second.base, KEY, &acked).await;
    second.kill();
}
