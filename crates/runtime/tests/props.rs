//! Property tests: per-key serialization (mutual exclusion, FIFO order, no lost update across
//! idle eviction) and alarms (exactly the last `set` of each alarm fires, with its payload,
//! never before it is due, and a cancelled one never) for random operation sequences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use sessiond_runtime::{Durability, FnHandler, JsonCodec, ObjectKind, Runtime, RuntimeConfig};
use sessiond_store::memory::MemoryEngine;
use sessiond_store::{now_ms, Millis, ObjectStore};
use tokio::time::Instant;

const KEYS: usize = 4;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One read-modify-write of `key` that yields `yields` times while holding the lock.
#[derive(Clone, Debug)]
struct Op {
    key: usize,
    yields: u8,
    evict_after: bool,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (0..KEYS, 0u8..4, any::<bool>()).prop_map(|(key, yields, evict_after)| Op {
            key,
            yields,
            evict_after,
        }),
        1..60,
    )
}

/// Runs `ops` as concurrent tasks on `rt`; returns each key's acquisition order (op indices)
/// and the persisted counters.
fn run_ops(rt: &tokio::runtime::Runtime, ops: &[Op]) -> (Vec<Vec<usize>>, Vec<u64>) {
    rt.block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryEngine::new());
        let kind = ObjectKind::<u64>::persistent("counter", store.clone(), JsonCodec);
        kind.set_idle_after(Duration::ZERO);
        let held: Arc<Vec<AtomicBool>> =
            Arc::new((0..KEYS).map(|_| AtomicBool::new(false)).collect());
        let order = Arc::new(Mutex::new(vec![Vec::new(); KEYS]));
        let tasks: Vec<_> = ops
            .iter()
            .cloned()
            .enumerate()
            .map(|(index, op)| {
                let (kind, held, order) = (kind.clone(), held.clone(), order.clone());
                tokio::spawn(async move {
                    let key = format!("k{}", op.key);
                    let mut g = kind.lock(&key).await;
                    assert!(
                        !held[op.key].swap(true, Ordering::SeqCst),
                        "two holders of {key}"
                    );
                    order.lock().unwrap()[op.key].push(index);
                    let v = g.load().await.expect("load").copied().unwrap_or(0);
                    for _ in 0..op.yields {
                        tokio::task::yield_now().await;
                    }
                    g.save(v + 1, Durability::Confirmed).await.expect("save");
                    held[op.key].store(false, Ordering::SeqCst);
                    drop(g);
                    if op.evict_after {
                        // Drops every idle cached state (never a locked or awaited one).
                        kind.evict_idle(Instant::now() + Duration::from_secs(1));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let mut counts = Vec::new();
        for key in 0..KEYS {
            let bytes = store
                .load_object("counter", &format!("k{key}"))
                .await
                .unwrap();
            let n = bytes.map_or(0, |b| serde_json::from_slice::<u64>(&b).unwrap());
            counts.push(n);
        }
        let order = order.lock().unwrap().clone();
        (order, counts)
    })
}

fn expected_counts(ops: &[Op]) -> Vec<u64> {
    let mut counts = vec![0u64; KEYS];
    for op in ops {
        counts[op.key] += 1;
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// On one thread tasks reach the lock in spawn order: each key's holders follow that
    /// order (FIFO), one at a time, and no increment is lost to eviction between them.
    #[test]
    fn one_key_at_a_time_in_fifo_order(ops in ops()) {
        let rt = current_thread();
        let (order, counts) = run_ops(&rt, &ops);
        prop_assert_eq!(counts, expected_counts(&ops));
        for (key, acquired) in order.iter().enumerate() {
            let spawned: Vec<usize> =
                ops.iter().enumerate().filter(|(_, op)| op.key == key).map(|(i, _)| i).collect();
            prop_assert_eq!(acquired, &spawned, "key {}", key);
        }
    }

    /// On several worker threads: still one holder per key and no lost increment.
    #[test]
    fn one_key_at_a_time_on_many_threads(ops in ops()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let (_, counts) = run_ops(&rt, &ops);
        prop_assert_eq!(counts, expected_counts(&ops));
    }
}

/// An alarm operation before the runtime starts.
#[derive(Clone, Debug)]
enum AlarmOp {
    /// Set (or replace) the alarm, due `due_in_ms` from the test's start (may be past).
    Set {
        key: u8,
        name: u8,
        due_in_ms: i64,
        payload: u8,
    },
    Cancel {
        key: u8,
        name: u8,
    },
}

fn alarm_ops() -> impl Strategy<Value = Vec<AlarmOp>> {
    let op = prop_oneof![
        3 => (0u8..3, 0u8..2, -200i64..300, any::<u8>()).prop_map(|(key, name, due_in_ms, payload)| {
            AlarmOp::Set { key, name, due_in_ms, payload }
        }),
        1 => (0u8..3, 0u8..2).prop_map(|(key, name)| AlarmOp::Cancel { key, name }),
    ];
    prop::collection::vec(op, 1..20)
}

type Fire = (String, String, String, Millis);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn the_last_set_of_each_alarm_fires_once_when_due(ops in alarm_ops()) {
        let rt = current_thread();
        let (expected, fired) = rt.block_on(async {
            let store: Arc<dyn ObjectStore> = Arc::new(MemoryEngine::new());
            let config = RuntimeConfig {
                alarm_backoff_base: Duration::from_millis(10),
                alarm_poll_max: Duration::from_millis(20),
                ..RuntimeConfig::default()
            };
            let mut builder = Runtime::builder(store, config);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Fire>();
            builder.alarm_handler("obj", FnHandler(move |key, name, payload| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((key, name, payload, now_ms()));
                    Ok(())
                }
            }));
            let alarms = builder.alarms();
            let start = now_ms();
            let mut expected: BTreeMap<(String, String), (String, Millis)> = BTreeMap::new();
            for op in &ops {
                match *op {
                    AlarmOp::Set { key, name, due_in_ms, payload } => {
                        let (key, name) = (format!("k{key}"), format!("n{name}"));
                        let due = start + due_in_ms;
                        alarms.set("obj", &key, &name, due, &payload.to_string()).await.unwrap();
                        expected.insert((key, name), (payload.to_string(), due));
                    }
                    AlarmOp::Cancel { key, name } => {
                        let (key, name) = (format!("k{key}"), format!("n{name}"));
                        alarms.cancel("obj", &key, &name).await.unwrap();
                        expected.remove(&(key, name));
                    }
                }
            }
            let runtime = builder.start();
            let mut fired: HashMap<(String, String), Vec<(String, Millis)>> = HashMap::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while fired.len() < expected.len() {
                let Ok(Some((key, name, payload, at))) =
                    tokio::time::timeout_at(deadline, rx.recv()).await
                else {
                    break;
                };
                fired.entry((key, name)).or_default().push((payload, at));
            }
            // Every alarm is gone from the store once its handler succeeded.
            for key in 0..3 {
                let key = format!("k{key}");
                while !alarms.list("obj", &key).await.unwrap().is_empty() {
                    assert!(tokio::time::Instant::now() < deadline, "alarms of {key} left");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            runtime.shutdown().await;
            while let Ok((key, name, payload, at)) = rx.try_recv() {
                fired.entry((key, name)).or_default().push((payload, at));
            }
            (expected, fired)
        });
        let fired_keys: Vec<_> = fired.keys().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let expected_keys: Vec<_> = expected.keys().cloned().collect();
        prop_assert_eq!(fired_keys, expected_keys);
        for (id, (payload, due)) in &expected {
            let fires = &fired[id];
            prop_assert_eq!(fires.len(), 1, "{:?} fired {:?}", id, fires);
            prop_assert_eq!(&fires[0].0, payload);
            prop_assert!(fires[0].1 >= *due, "{:?} fired at {} before due {}", id, fires[0].1, due);
        }
    }
}
