//! The shared engine suite: one set of behavioural checks every engine must pass.
//!
//! Each engine's own tests call [`run_all`] with a freshly opened engine. Checks use ids unique
//! to the run, so they can share one engine instance (one Redis server) without interfering.
//! Time is passed explicitly, so expiry is checked by handing the engine a later `now`; records
//! are always created with deadlines in the real future, so engines with native TTLs (Redis)
//! keep them long enough for the check.
//!
//! A failed check panics with a message naming the check: this module is test code.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::sessions::{Cas, RecordWrite, SessionRecord};
use crate::{now_ms, Durability, Stores};

mod auth_time;
mod cache;
mod compaction;
mod data_update;
mod erasures;
mod expiry_events;
mod objects;
mod origin;
mod outbox;
mod outbox_route;
mod pipeline;
mod realtime;
mod retention;
mod rotation;
mod session_steps;
mod stream_cas;
mod stream_create;
mod stream_fixtures;
mod stream_links;
mod stream_tail;
mod streams;
use cache::{cache_clear_is_exact, cache_namespace_limit, cache_values_and_expiry};
use objects::{objects_alarms, objects_state_and_listing, objects_swap};
pub use realtime::{run_presence, run_realtime_bus};
pub use stream_fixtures::{chunk as stream_chunk, meta as stream_meta};
pub use streams::run_streams;

const C: Durability = Durability::Confirmed;
const HOUR: i64 = 3_600_000;

static RUN: AtomicU64 = AtomicU64::new(0);

/// A prefix unique to this call (process id, time, counter).
fn unique(tag: &str) -> String {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{}-{}-{n}", std::process::id(), now_ms())
}

/// Runs every check against one engine (the stream checks too when `stores.streams` is set).
pub async fn run_all(stores: Stores) {
    sessions_round_trip(&stores).await;
    sessions_expiry(&stores).await;
    sessions_compare_and_set(&stores).await;
    sessions_touch(&stores).await;
    sessions_per_user_index(&stores).await;
    sessions_sweep(&stores).await;
    sessions_concurrent_merges(&stores).await;
    data_update::sessions_data_update_semantics(&stores).await;
    data_update::sessions_data_update_refusals(&stores).await;
    data_update::sessions_data_update_concurrent(&stores).await;
    data_update::sessions_data_update_events(&stores).await;
    origin::sessions_origin(&stores).await;
    rotation::sessions_rotation(&stores).await;
    session_steps::sessions_touch_now(&stores).await;
    session_steps::sessions_delete_checked(&stores).await;
    session_steps::sessions_insert_if_room(&stores).await;
    auth_time::sessions_auth_time(&stores).await;
    outbox::sessions_outbox(&stores).await;
    outbox::outbox_relay_lease(&stores).await;
    outbox::outbox_reads_mark_cut_queues(&stores).await;
    expiry_events::sessions_expiry_events(&stores).await;
    cache_values_and_expiry(&stores).await;
    cache_clear_is_exact(&stores).await;
    cache_namespace_limit(&stores).await;
    objects_state_and_listing(&stores).await;
    objects_alarms(&stores).await;
    objects_swap(&stores).await;
    erasures::erasure_list(&stores).await;
    if let Some(streams) = stores.streams.clone() {
        run_streams(streams).await;
    }
    if let Some(lease) = stores.seal_lease.clone() {
        seal_lease_is_kept_by_its_holder(lease.as_ref()).await;
    }
    if let Some(bus) = stores.realtime.clone() {
        run_realtime_bus(bus).await;
    }
    if let Some(presence) = stores.presence.clone() {
        run_presence(presence).await;
    }
    // Last: a route stays for the engine's life (it queues other events whole).
    outbox_route::outbox_route(&stores).await;
    stores.admin.ping().await.expect("store call");
}

/// A session created now, living an hour (idle) / a day (absolute).
pub fn session(id: &str, user: Option<&str>) -> SessionRecord {
    let now = now_ms();
    SessionRecord {
        id: id.to_string(),
        user_id: user.map(str::to_string),
        data: r#"{"a":1}"#.into(),
        device: Some(r#"{"ip":"127.0.0.1"}"#.into()),
        created_at: now,
        updated_at: now,
        last_seen_at: now,
        idle_ttl_ms: HOUR,
        idle_expires_at: now + HOUR,
        absolute_expires_at: now + 24 * HOUR,
        version: 1,
        origin: crate::SessionOrigin::Service,
        auth_time: now - 5,
    }
}

async fn sessions_round_trip(s: &Stores) {
    let id = unique("rt");
    let rec = session(&id, Some("u1"));
    assert!(
        s.sessions
            .insert_session(&rec, C)
            .await
            .expect("store call"),
        "insert of a new id"
    );
    let got = s
        .sessions
        .get_session(&id, now_ms())
        .await
        .expect("store call");
    assert_eq!(
        got.as_ref(),
        Some(&rec),
        "get returns exactly what was inserted"
    );
    assert!(
        !s.sessions
            .insert_session(&rec, C)
            .await
            .expect("store call"),
        "insert never overwrites"
    );
    assert!(s
        .sessions
        .get_session(&unique("nope"), now_ms())
        .await
        .expect("store call")
        .is_none());
    assert!(
        s.sessions
            .delete_session(&id, now_ms(), C)
            .await
            .expect("store call"),
        "delete live"
    );
    assert!(
        !s.sessions
            .delete_session(&id, now_ms(), C)
            .await
            .expect("store call"),
        "delete twice"
    );
    assert!(s
        .sessions
        .get_session(&id, now_ms())
        .await
        .expect("store call")
        .is_none());
}

async fn sessions_expiry(s: &Stores) {
    let id = unique("exp");
    let mut rec = session(&id, None);
    rec.absolute_expires_at = rec.created_at + 2 * HOUR;
    s.sessions
        .insert_session(&rec, C)
        .await
        .expect("store call");
    let idle_deadline = rec.idle_expires_at;
    assert!(s
        .sessions
        .get_session(&id, idle_deadline - 1)
        .await
        .expect("store call")
        .is_some());
    assert!(
        s.sessions
            .get_session(&id, idle_deadline)
            .await
            .expect("store call")
            .is_none(),
        "idle deadline reached: expired even before any sweep"
    );
    // Slide the idle deadline past the absolute one: absolute still wins.
    let far = rec.created_at + 5 * HOUR;
    assert!(s
        .sessions
        .touch_session(&id, far, rec.created_at + 1, rec.created_at + 1, C)
        .await
        .expect("store call"));
    assert!(s
        .sessions
        .get_session(&id, rec.absolute_expires_at - 1)
        .await
        .expect("store call")
        .is_some());
    assert!(
        s.sessions
            .get_session(&id, rec.absolute_expires_at)
            .await
            .expect("store call")
            .is_none(),
        "absolute deadline reached"
    );
    assert!(
        !s.sessions
            .delete_session(&id, rec.absolute_expires_at, C)
            .await
            .expect("store call"),
        "an expired record does not count as deleted"
    );
}

async fn sessions_compare_and_set(s: &Stores) {
    let id = unique("cas");
    let rec = session(&id, Some("owner"));
    s.sessions
        .insert_session(&rec, C)
        .await
        .expect("store call");
    let mut next = rec.clone();
    next.data = r#"{"b":2}"#.into();
    next.version = 2;
    next.user_id = Some("intruder".into());
    let now = now_ms();
    assert_eq!(
        s.sessions
            .replace_session(RecordWrite::new(&next, 7, now))
            .await
            .expect("store call"),
        Cas::VersionMismatch
    );
    assert_eq!(
        s.sessions
            .replace_session(RecordWrite::new(&next, 1, now))
            .await
            .expect("store call"),
        Cas::Written
    );
    let got = s
        .sessions
        .get_session(&id, now)
        .await
        .expect("store call")
        .expect("store call");
    assert_eq!(got.data, r#"{"b":2}"#);
    assert_eq!(got.version, 2);
    assert_eq!(
        got.user_id.as_deref(),
        Some("owner"),
        "replace keeps the owner"
    );
    assert_eq!(
        s.sessions
            .replace_session(RecordWrite::new(&next, 1, now))
            .await
            .expect("store call"),
        Cas::VersionMismatch
    );
    let mut ghost = next.clone();
    ghost.id = unique("ghost");
    assert_eq!(
        s.sessions
            .replace_session(RecordWrite::new(&ghost, 1, now))
            .await
            .expect("store call"),
        Cas::Missing,
        "replace never creates"
    );
    assert_eq!(
        s.sessions
            .replace_session(RecordWrite::new(&next, 2, got.expires_at()))
            .await
            .expect("store call"),
        Cas::Missing,
        "replace of an expired record"
    );
}

async fn sessions_touch(s: &Stores) {
    let id = unique("touch");
    let rec = session(&id, None);
    s.sessions
        .insert_session(&rec, C)
        .await
        .expect("store call");
    let now = rec.created_at + 10;
    let later = rec.idle_expires_at + 1000;
    assert!(s
        .sessions
        .touch_session(&id, later, now, now, Durability::Unconfirmed)
        .await
        .expect("store call"));
    let got = s
        .sessions
        .get_session(&id, now)
        .await
        .expect("store call")
        .expect("store call");
    assert_eq!(got.idle_expires_at, later);
    assert_eq!(got.last_seen_at, now);
    assert_eq!(got.version, 1, "touch keeps the version");
    assert!(s
        .sessions
        .touch_session(&id, later - 5000, now, now, C)
        .await
        .expect("store call"));
    let got = s
        .sessions
        .get_session(&id, now)
        .await
        .expect("store call")
        .expect("store call");
    assert_eq!(
        got.idle_expires_at, later,
        "touch never moves the deadline backward"
    );
    assert!(!s
        .sessions
        .touch_session(&unique("none"), later, now, now, C)
        .await
        .expect("store call"));
}

async fn sessions_per_user_index(s: &Stores) {
    let user = unique("user");
    let prefix_twin = format!("{user}x");
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut rec = session(&format!("{user}-s{i}"), Some(&user));
        rec.created_at += i; // deterministic order
        s.sessions
            .insert_session(&rec, C)
            .await
            .expect("store call");
        ids.push(rec.id);
    }
    let other = session(&unique("other"), Some(&prefix_twin));
    s.sessions
        .insert_session(&other, C)
        .await
        .expect("store call");
    let anon = session(&unique("anon"), None);
    s.sessions
        .insert_session(&anon, C)
        .await
        .expect("store call");

    let now = now_ms();
    let listed: Vec<String> = s
        .sessions
        .list_user_sessions(&user, now, 100)
        .await
        .expect("store call")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ids, "only this user's sessions, oldest first");
    assert_eq!(
        s.sessions
            .list_user_sessions(&user, now, 2)
            .await
            .expect("store call")
            .len(),
        2,
        "limit"
    );

    let deleted = s
        .sessions
        .delete_user_sessions(&user, Some(&ids[1]), now, C)
        .await
        .expect("store call");
    let mut expected = vec![ids[0].clone(), ids[2].clone()];
    expected.sort();
    let mut deleted_sorted = deleted.clone();
    deleted_sorted.sort();
    assert_eq!(deleted_sorted, expected, "revoke all but the current one");
    let left: Vec<String> = s
        .sessions
        .list_user_sessions(&user, now, 100)
        .await
        .expect("store call")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![ids[1].clone()]);
    assert!(s
        .sessions
        .get_session(&ids[0], now)
        .await
        .expect("store call")
        .is_none());
    assert!(
        s.sessions
            .get_session(&other.id, now)
            .await
            .expect("store call")
            .is_some(),
        "user `ux` untouched"
    );

    let deleted = s
        .sessions
        .delete_user_sessions(&user, None, now, C)
        .await
        .expect("store call");
    assert_eq!(deleted, vec![ids[1].clone()]);
    assert!(s
        .sessions
        .list_user_sessions(&user, now, 100)
        .await
        .expect("store call")
        .is_empty());
    // Expired sessions are not listed.
    let rec = session(&unique("late"), Some(&user));
    s.sessions
        .insert_session(&rec, C)
        .await
        .expect("store call");
    assert!(s
        .sessions
        .list_user_sessions(&user, rec.expires_at(), 100)
        .await
        .expect("store call")
        .is_empty());
}

async fn sessions_sweep(s: &Stores) {
    let short = session(&unique("sweep-short"), Some("sweeper"));
    let long = {
        let mut r = session(&unique("sweep-long"), Some("sweeper"));
        r.idle_expires_at += 10 * HOUR;
        r.absolute_expires_at += 10 * HOUR;
        r
    };
    s.sessions
        .insert_session(&short, C)
        .await
        .expect("store call");
    s.sessions
        .insert_session(&long, C)
        .await
        .expect("store call");
    let then = short.expires_at() + 1;
    for _ in 0..1000 {
        if s.sessions
            .sweep_sessions(then, 50)
            .await
            .expect("store call")
            == 0
        {
            break;
        }
    }
    assert!(s
        .sessions
        .get_session(&short.id, then)
        .await
        .expect("store call")
        .is_none());
    assert!(
        s.sessions
            .get_session(&long.id, then)
            .await
            .expect("store call")
            .is_some(),
        "sweep spares live rows"
    );
}

/// The lost-update check: 100 concurrent read-modify-write loops on one record, each adding its
/// own key with compare-and-set and retrying on conflict, must leave all 100 keys.
async fn sessions_concurrent_merges(s: &Stores) {
    let id = unique("merge");
    let mut rec = session(&id, None);
    rec.data = "{}".into();
    s.sessions
        .insert_session(&rec, C)
        .await
        .expect("store call");
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = Arc::clone(&s.sessions);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let now = now_ms();
                let cur = store
                    .get_session(&id, now)
                    .await
                    .expect("store call")
                    .expect("store call");
                let mut data: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&cur.data).expect("store call");
                data.insert(format!("k{i}"), i.into());
                let mut next = cur.clone();
                next.data = serde_json::to_string(&data).expect("store call");
                next.version = cur.version + 1;
                match store
                    .replace_session(RecordWrite::new(&next, cur.version, now))
                    .await
                    .expect("store call")
                {
                    Cas::Written => break,
                    Cas::VersionMismatch => tokio::task::yield_now().await,
                    Cas::Missing => panic!("record vanished"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("store call");
    }
    let got = s
        .sessions
        .get_session(&id, now_ms())
        .await
        .expect("store call")
        .expect("store call");
    let data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&got.data).expect("store call");
    assert_eq!(data.len(), 100, "no lost update");
    assert_eq!(got.version, 101);
}

/// The holder of the sealing lease keeps its token while it renews. (Takeover by another
/// handle needs two handles: each shared engine tests it with two.)
async fn seal_lease_is_kept_by_its_holder(lease: &dyn crate::SealLease) {
    let first = lease.acquire_seal_lease(60_000).await.expect("store call");
    let Some(token) = first else {
        panic!("a free lease (or one this handle holds) is granted");
    };
    assert!(token > 0, "tokens start at 1");
    let again = lease.acquire_seal_lease(60_000).await.expect("store call");
    assert_eq!(again, Some(token), "renewed, same token");
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_engine_passes_the_suite() {
        let engine = std::sync::Arc::new(crate::memory::MemoryEngine::new());
        super::run_all(
            crate::Stores::from_engine(engine.clone())
                .with_streams(engine)
                .with_realtime(std::sync::Arc::new(crate::memory::MemoryBus::new()))
                .with_presence(std::sync::Arc::new(crate::memory::MemoryPresence::new())),
        )
        .await;
    }
}
