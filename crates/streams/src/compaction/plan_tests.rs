//! A randomized property test of the planner: for random State Protocol histories (insert,
//! update, upsert, delete over a few keys, resets, txids, other control events, grouped into
//! chunks) and random cut-offs, materializing what survives gives the same state as
//! materializing everything, and so does a reader that read the original up to any offset at
//! or above the purge point and the survivors from there.

use std::collections::BTreeMap;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::*;

type State = BTreeMap<String, Value>;

fn apply(state: &mut State, message: &Value) {
    let headers = &message["headers"];
    if headers["control"] == "reset" {
        state.clear();
        return;
    }
    let Some(op) = headers["operation"].as_str() else {
        return;
    };
    let key = format!("{}/{}", message["type"], message["key"]);
    match op {
        "delete" => {
            state.remove(&key);
        }
        _ => {
            state.insert(key, message["value"].clone());
        }
    }
}

fn materialize<'a>(messages: impl Iterator<Item = &'a (u64, Value)>) -> State {
    let mut state = State::new();
    for (_, m) in messages {
        apply(&mut state, m);
    }
    state
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

fn random_message(rng: &mut ChaCha8Rng, serial: u64) -> Value {
    match below(rng, 100) {
        0..=2 => json!({"headers": {"control": "reset"}}),
        3..=5 => json!({"headers": {"control": "snapshot-end"}}),
        6 => json!({"note": "no key fields"}),
        _ => {
            let op = ["insert", "update", "upsert", "delete"][below(rng, 4) as usize];
            let mut headers = json!({"operation": op});
            if below(rng, 5) == 0 {
                headers["txid"] = json!(format!("tx-{serial}"));
            }
            let kind = ["user", "task"][below(rng, 2) as usize];
            let mut m = json!({
                "type": kind,
                "key": format!("k{}", below(rng, 5)),
                "headers": headers,
            });
            if op != "delete" {
                m["value"] = json!({"v": serial});
            }
            m
        }
    }
}

/// One random case: the chunks as the planner sees them and every message with its offset.
fn random_history(rng: &mut ChaCha8Rng) -> (Vec<Chunk>, Vec<(u64, Value)>) {
    let key = vec!["type".to_string(), "key".to_string()];
    let (mut chunks, mut all) = (Vec::new(), Vec::new());
    let mut pos = 0u64;
    for _ in 0..1 + below(rng, 40) {
        let start = pos;
        let mut events = Vec::new();
        for i in 0..1 + below(rng, 4) {
            if i > 0 {
                pos += 1; // the separator
            }
            let m = random_message(rng, all.len() as u64);
            let bytes = serde_json::to_vec(&m).unwrap_or_default();
            events.push(Event {
                offset: pos,
                kind: classify(&bytes, &key),
            });
            all.push((pos, m));
            pos += bytes.len() as u64;
        }
        chunks.push(Chunk {
            offset: start,
            end: pos,
            events,
            droppable: below(rng, 10) != 0,
        });
        pos += 7; // gaps between chunks are allowed
    }
    (chunks, all)
}

#[test]
fn compacted_materializes_like_the_whole_history() {
    for case in 0..800u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed ^ case);
        let (chunks, all) = random_history(&mut rng);
        let end = chunks.last().map_or(0, |c| c.end);
        let rules = Rules {
            before: below(&mut rng, end + 2),
            grace_cut: below(&mut rng, end + 2),
            txid_cut: below(&mut rng, end + 2),
            keep_deletes: below(&mut rng, 4) == 0,
        };
        let p = plan(&chunks, rules);
        let dropped = |offset: u64| {
            chunks
                .iter()
                .find(|c| c.offset <= offset && offset < c.end)
                .is_some_and(|c| p.drop.contains(&c.offset))
        };
        let kept: Vec<_> = all.iter().filter(|(o, _)| !dropped(*o)).cloned().collect();
        let full = materialize(all.iter());
        assert_eq!(materialize(kept.iter()), full, "case {case}: {rules:?}");

        for c in chunks.iter().filter(|c| p.drop.contains(&c.offset)) {
            assert!(c.droppable && c.end <= rules.before, "case {case}");
            for e in &c.events {
                match &e.kind {
                    Kind::Keyed { txid, delete, .. } => {
                        assert!(
                            !txid || e.offset < rules.txid_cut,
                            "case {case}: young txid"
                        );
                        assert!(!delete || !rules.keep_deletes, "case {case}: a delete");
                    }
                    other => panic!("case {case}: dropped {other:?}"),
                }
            }
        }
        // A reader that followed the original up to `at` (at or above the purge point) and
        // reads the compacted stream from there ends in the same state.
        let purged = p.purges.iter().copied().max().unwrap_or(0);
        for (at, _) in all.iter().filter(|(o, _)| *o >= purged) {
            let mut state = materialize(all.iter().filter(|(o, _)| o < at));
            for (_, m) in kept.iter().filter(|(o, _)| o >= at) {
                apply(&mut state, m);
            }
            assert_eq!(state, full, "case {case}: reader from {at}");
        }
    }
}

#[test]
fn latest_per_key_and_purged_deletes() {
    let key = vec!["type".to_string(), "key".to_string()];
    let ev = |offset: u64, m: Value| Event {
        offset,
        kind: classify(&serde_json::to_vec(&m).unwrap_or_default(), &key),
    };
    let chunk = |offset: u64, m: Value| Chunk {
        offset,
        end: offset + 10,
        events: vec![ev(offset, m)],
        droppable: true,
    };
    let op = |k: &str, op: &str| json!({"type": "t", "key": k, "headers": {"operation": op}});
    let chunks = vec![
        chunk(0, op("a", "insert")),
        chunk(10, op("b", "insert")),
        chunk(20, op("a", "update")),
        chunk(30, op("b", "delete")),
        chunk(40, json!({"headers": {"control": "reset"}})),
        chunk(50, op("a", "insert")),
    ];
    let all = Rules {
        before: 60,
        grace_cut: 60,
        txid_cut: 60,
        keep_deletes: false,
    };
    let p = plan(&chunks, all);
    assert_eq!(p.drop, vec![0, 10, 30], "a's insert, b entirely");
    assert_eq!(p.purges, vec![0, 0, 31]);
    // Within the grace period the delete stays, and so does nothing else of b.
    let young = plan(
        &chunks,
        Rules {
            grace_cut: 30,
            ..all
        },
    );
    assert_eq!(young.drop, vec![0, 10]);
    // The compaction point bounds what goes.
    let low = plan(&chunks, Rules { before: 20, ..all });
    assert_eq!(low.drop, vec![0, 10]);
    // With live forks no delete goes (nor, then, the rest of b: its delete is its latest).
    let forked = plan(
        &chunks,
        Rules {
            keep_deletes: true,
            ..all
        },
    );
    assert_eq!(forked.drop, vec![0, 10]);
    assert_eq!(classify(b"[1,2]", &key), Kind::Other);
    assert_eq!(
        classify(br#"{"type":"t","headers":{"operation":"insert"}}"#, &key),
        Kind::Other,
        "no key field: kept"
    );
}
