//! Per-key serialization, idle eviction, persistence helpers and listing.

use std::sync::Arc;
use std::time::Duration;

use sessiond_runtime::{Durability, FnCodec, JsonCodec, ObjectKind, Runtime, RuntimeConfig};
use sessiond_store::memory::MemoryEngine;
use sessiond_store::ObjectStore;
use tokio::time::{timeout, Instant};

const LONG: Duration = Duration::from_secs(3);

fn store() -> Arc<dyn ObjectStore> {
    Arc::new(MemoryEngine::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_on_one_key_are_serialized() {
    let kind = ObjectKind::<u64>::in_memory("counter");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let kind = kind.clone();
            tokio::spawn(async move {
                let mut g = kind.lock("k").await;
                let v = g.unwrap_or(0);
                // Yield between read and write: without the lock, increments would be lost.
                tokio::task::yield_now().await;
                g.set(v + 1);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(*kind.lock("k").await, Some(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_through_the_store_are_serialized() {
    let store = store();
    let kind = ObjectKind::<u64>::persistent("counter", store.clone(), JsonCodec);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let kind = kind.clone();
            tokio::spawn(async move {
                let mut g = kind.lock("k").await;
                let v = g.load().await.expect("load").copied().unwrap_or(0);
                tokio::task::yield_now().await;
                g.save(v + 1, Durability::Unconfirmed).await.expect("save");
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let bytes = store.load_object("counter", "k").await.expect("load");
    assert_eq!(bytes.as_deref(), Some(&b"100"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_do_not_block_each_other() {
    let kind = ObjectKind::<u32>::in_memory("k");
    let held = kind.lock("a").await;
    // Key b proceeds while a is held...
    let mut b = timeout(LONG, kind.lock("b"))
        .await
        .expect("b not blocked by a");
    b.set(1);
    drop(b);
    // ...while a is really held: a second locker of a waits.
    assert!(kind.try_lock("a").is_none());
    let k2 = kind.clone();
    let waiter = tokio::spawn(async move { k2.lock("a").await.is_some() });
    assert!(timeout(Duration::from_millis(50), async {
        while !waiter.is_finished() {
            tokio::task::yield_now().await
        }
    })
    .await
    .is_err());
    drop(held);
    assert!(!timeout(LONG, waiter)
        .await
        .expect("a released")
        .expect("join"));
}

#[tokio::test]
async fn eviction_drops_idle_state_but_never_a_locked_object() {
    let kind = ObjectKind::<u32>::in_memory("e");
    kind.set_idle_after(Duration::from_secs(60));
    for key in ["a", "b", "c"] {
        kind.lock(key).await.set(1);
    }
    assert_eq!(kind.resident_count(), 3);

    // Not idle yet.
    assert_eq!(kind.evict_idle(Instant::now()), 0);

    let later = Instant::now() + Duration::from_secs(61);
    let held = kind.lock("a").await;
    // Hold b too, with a waiter queued behind the test's guard.
    let held_b = kind.try_lock("b").expect("b free");
    let k2 = kind.clone();
    let waiter = tokio::spawn(async move { k2.lock("b").await.is_some() });
    for _ in 0..10 {
        tokio::task::yield_now().await; // let the waiter queue up (current-thread runtime)
    }
    assert_eq!(kind.evict_idle(later), 1, "only c is free and idle");
    assert!(kind.is_resident("a") && kind.is_resident("b") && !kind.is_resident("c"));
    drop(held);
    drop(held_b);
    assert!(waiter.await.expect("join"));
    assert_eq!(
        *kind.lock("a").await,
        Some(1),
        "locked object kept its state"
    );
    assert_eq!(kind.evict_idle(Instant::now() + Duration::from_secs(61)), 2);
    assert_eq!(kind.resident_count(), 0);
}

#[tokio::test]
async fn load_brings_persisted_state_back_after_eviction() {
    let store = store();
    let kind = ObjectKind::<String>::persistent("p", store.clone(), JsonCodec);
    kind.set_idle_after(Duration::from_millis(0));
    {
        let mut g = kind.lock("k").await;
        assert!(g.load().await.expect("load").is_none());
        g.save("hello".into(), Durability::Confirmed)
            .await
            .expect("save");
    }
    assert_eq!(kind.evict_idle(Instant::now() + Duration::from_secs(1)), 1);
    assert!(!kind.is_resident("k"));

    let mut g = kind.lock("k").await;
    assert_eq!(g.state(), None, "memory state was dropped");
    assert_eq!(
        g.load().await.expect("load").cloned(),
        Some("hello".to_string())
    );
    g.state_mut().expect("state").push_str(" world");
    assert!(g.persist(Durability::Confirmed).await.expect("persist"));
    assert!(g.delete(Durability::Confirmed).await.expect("delete"));
    assert!(
        g.load().await.expect("load").is_none(),
        "deleted stays deleted"
    );
    drop(g);
    assert_eq!(store.load_object("p", "k").await.expect("load"), None);
}

#[tokio::test]
async fn corrupt_state_is_a_codec_error() {
    let store = store();
    store
        .save_object("c", "k", b"not json", Durability::Confirmed)
        .await
        .expect("save");
    let kind = ObjectKind::<u32>::persistent("c", store, JsonCodec);
    let mut g = kind.lock("k").await;
    let err = g.load().await.expect_err("corrupt");
    assert!(err.to_string().contains("c/k"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn background_sweep_evicts_idle_objects() {
    let config = RuntimeConfig {
        idle_evict_after: Duration::from_secs(5),
        eviction_interval: Duration::from_secs(1),
        ..RuntimeConfig::default()
    };
    let mut builder = Runtime::builder(store(), config);
    let kind = builder.kind::<u32>("swept");
    let runtime = builder.start();
    kind.lock("k").await.set(1);
    let held = kind.lock("held").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(kind.is_resident("k"), "not idle yet");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!kind.is_resident("k"), "evicted by the sweep");
    assert!(kind.is_resident("held"));
    drop(held);
    runtime.shutdown().await;
}

#[tokio::test]
async fn list_objects_with_prefix_and_paging() {
    let store = store();
    let codec = FnCodec::new(
        |s: &String| Ok(s.as_bytes().to_vec()),
        |b: &[u8]| String::from_utf8(b.to_vec()).map_err(sessiond_runtime::CodecError::new),
    );
    let kind = ObjectKind::<String>::persistent("user", store.clone(), codec);
    for key in ["u:1", "u:2", "u:3", "u:4", "u:5", "v:1"] {
        kind.lock(key)
            .await
            .save(key.to_string(), Durability::Unconfirmed)
            .await
            .expect("save");
    }
    // Another kind's objects never show up.
    store
        .save_object("other", "u:9", b"x", Durability::Confirmed)
        .await
        .expect("save");

    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = kind.list("u:", after.as_deref(), 2).await.expect("list");
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        pages.push(page);
    }
    assert_eq!(
        pages,
        vec![
            vec!["u:1".to_string(), "u:2".to_string()],
            vec!["u:3".to_string(), "u:4".to_string()],
            vec!["u:5".to_string()],
        ]
    );
    assert_eq!(kind.list("", None, 10).await.expect("list").len(), 6);
}
