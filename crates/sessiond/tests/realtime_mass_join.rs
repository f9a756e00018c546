//! A mass join of one channel: every join sends each member a `presence_diff`, N² frames for
//! N members, and members that read slower than the burst must not be closed with 1013
//! (`Outbound queue overflow`). A lagging socket gets no diffs and one fresh
//! `presence_state` once it has drained; every member's final view equals the true set.
//! Real server (one node, and two on one redis-server), real WebSocket clients; the slow readers use a tiny TCP receive buffer, so
//! the server's writes to them block (with the old behaviour they were closed with 1013).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use std::collections::BTreeMap;

use common::{counter, json, TestServer};
use realtime_support::{connect, connect_slow, Ws, WAIT};
use serde_json::{json, Value};
use sessiond::config::EngineKind;
use sessiond_engine_redis::testing::RedisServer;

const KEY: &str = "mass-join-service-key-0123456789";
const CHANNEL: &str = "room:mass";
/// Members joining at once (~10k presence frames: seconds in a debug build).
const MEMBERS: usize = 100;
/// Every fifth member reads only after everyone joined.
const SLOW_EVERY: usize = 5;
/// A small queue: the old behaviour closed a slow reader after this many frames.
const QUEUE: usize = 16;

/// A member's presence view: connection id → user.
type View = BTreeMap<String, String>;

/// Applies a `presence_state` (replaces the view) or `presence_diff` (leaves, then joins).
fn apply(view: &mut View, frame: &Value) {
    let metas = |set: &Value| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (user, entry) in set.as_object().into_iter().flatten() {
            for meta in entry["metas"].as_array().into_iter().flatten() {
                out.push((meta["connId"].as_str().unwrap().to_string(), user.clone()));
            }
        }
        out
    };
    match frame["type"].as_str() {
        Some("presence_state") => *view = metas(&frame["presence"]).into_iter().collect(),
        Some("presence_diff") => {
            for (id, _) in metas(&frame["leaves"]) {
                view.remove(&id);
            }
            view.extend(metas(&frame["joins"]));
        }
        _ => {}
    }
}

/// Reads frames (a close fails the test) until the view is `expected`.
async fn converge(ws: &mut Ws, view: &mut View, expected: &View) {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while view != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "view has {} of {} members",
            view.len(),
            expected.len()
        );
        let frame = ws.next().await;
        apply(view, &frame);
    }
}

async fn member(s: &TestServer, i: usize) -> (Ws, String) {
    let auth = format!("Bearer {KEY}");
    let path = format!("/v1/realtime?userId=m{i}&deviceId=d{i}");
    let headers = [("Authorization", auth.as_str())];
    let mut ws = if i.is_multiple_of(SLOW_EVERY) {
        connect_slow(s, &path, &headers, 4096).await
    } else {
        connect(s, &path, &headers).await.open()
    };
    let connected = ws.expect("connected").await;
    let id = connected["connId"].as_str().unwrap().to_string();
    (ws, id)
}

/// `members` sockets (member `i` on node `i % nodes.len()`) join one channel at once; every
/// fifth reads nothing until all are in. Nobody is closed, every view ends complete.
async fn mass_join(nodes: &[&TestServer], members: usize) {
    let mut sockets = Vec::new();
    let mut expected = View::new();
    for i in 0..members {
        let (ws, id) = member(nodes[i % nodes.len()], i).await;
        expected.insert(id, format!("m{i}"));
        sockets.push(ws);
    }
    // Big metas make each diff ~3 KB: a slow reader's kernel buffers hold a few dozen.
    let pad = "p".repeat(3000);
    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        ws.send(json!({"type": "subscribe", "channel": CHANNEL, "meta": {"pad": pad}}))
            .await;
        if i.is_multiple_of(SLOW_EVERY) {
            slow.push(ws);
        } else {
            let expected = expected.clone();
            fast.push(tokio::spawn(async move {
                let mut view = View::new();
                converge(&mut ws, &mut view, &expected).await;
                ws
            }));
        }
    }
    let deadline = tokio::time::Instant::now() + WAIT * 6;
    loop {
        let (_, body) = json(
            nodes[0]
                .get(&format!("/v1/realtime/channels/{CHANNEL}/presence"))
                .bearer_auth(KEY),
        )
        .await;
        let present = body["presence"].as_object().map_or(0, |p| p.len());
        if present == members {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{present} of {members} members in the channel's presence"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The slow readers start reading only now: each drains, gets a fresh presence_state and
    // ends with the whole set — none was closed.
    for ws in &mut slow {
        let mut view = View::new();
        converge(ws, &mut view, &expected).await;
    }
    let mut open = slow;
    for task in fast {
        open.push(task.await.unwrap());
    }
    let mut resyncs = 0.0;
    for s in nodes {
        resyncs += counter(s, "sessiond_realtime_presence_resyncs_total").await;
        assert_eq!(
            counter(s, "sessiond_realtime_slow_consumers_total").await,
            0.0,
            "nobody was closed for a full queue"
        );
    }
    assert!(resyncs > 0.0, "the slow readers lagged (the resync ran)");

    // Everyone is still open and answers.
    let mut connections = 0;
    for s in nodes {
        let (status, stats) = json(s.get("/v1/realtime/stats").bearer_auth(KEY)).await;
        assert_eq!(status, 200);
        connections += stats["connections"].as_u64().unwrap();
    }
    assert_eq!(connections, members as u64);
    for ws in &mut open {
        ws.send(json!({"type": "ping", "id": 1})).await;
        while ws.next().await["type"] != "pong" {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_join_closes_no_slow_reader_and_every_view_ends_complete() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.api_keys = vec![KEY.into()];
        c.realtime.outbound_queue = QUEUE;
    })
    .await;
    mass_join(&[&s], MEMBERS).await;
}

/// On two nodes the other node's joins arrive as signals and take the same path: a lagging
/// socket skips them, and its fresh presence_state (from its node's copy) includes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_join_across_two_nodes_closes_no_slow_reader() {
    let redis = RedisServer::start();
    let tweak = |c: &mut sessiond::config::Config| {
        c.api_keys = vec![KEY.into()];
        c.realtime.outbound_queue = QUEUE;
    };
    let a = TestServer::start_node(&redis, tweak).await;
    let b = TestServer::start_node(&redis, tweak).await;
    mass_join(&[&a, &b], MEMBERS / 2).await;
}
