//! Sessions on two sessiond nodes sharing one Redis, as a client behind a round-robin load
//! balancer sees them: concurrent merges of one session through both nodes lose no field, and
//! a user's sessions are listed and revoked the same from either node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{json, TestServer};
use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;

const WRITERS: usize = 16;
const MERGES: usize = 10;

async fn two_nodes(redis: &RedisServer) -> Arc<[TestServer; 2]> {
    let a = TestServer::start_node(redis, |_| {}).await;
    let b = TestServer::start_node(redis, |_| {}).await;
    Arc::new([a, b])
}

async fn create(s: &TestServer, user: &str) -> String {
    let (status, body) = json(s.post("/v1/sessions").json(&json!({"user_id": user}))).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn listed(s: &TestServer, user: &str) -> BTreeSet<String> {
    let (status, body) = json(s.get(&format!("/v1/users/{user}/sessions"))).await;
    assert_eq!(status, 200, "{body}");
    body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_through_two_nodes_lose_no_field() {
    let redis = RedisServer::start();
    let nodes = two_nodes(&redis).await;
    let id = create(&nodes[0], "merger").await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (nodes, id) = (nodes.clone(), id.clone());
        writers.push(tokio::spawn(async move {
            for m in 0..MERGES {
                let node = &nodes[(w + m) % 2];
                let patch = json!({"data": {format!("w{w}_{m}"): m}});
                let (status, body) =
                    json(node.patch(&format!("/v1/sessions/{id}")).json(&patch)).await;
                assert_eq!(status, 200, "merge: {body}");
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    for node in nodes.iter() {
        let (status, body) = json(node.get(&format!("/v1/sessions/{id}"))).await;
        assert_eq!(status, 200);
        let data = body["data"].as_object().unwrap();
        assert_eq!(data.len(), WRITERS * MERGES, "every field kept: {body}");
        for w in 0..WRITERS {
            for m in 0..MERGES {
                assert_eq!(data[&format!("w{w}_{m}")], json!(m));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sessions_are_listed_and_revoked_from_either_node() {
    let redis = RedisServer::start();
    let nodes = two_nodes(&redis).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut ids = BTreeSet::new();
    for i in 0..6 {
        ids.insert(create(&nodes[i % 2], "multi").await);
    }
    let other = create(a, "someone-else").await;
    assert_eq!(
        listed(a, "multi").await,
        ids,
        "node A lists B's sessions too"
    );
    assert_eq!(listed(b, "multi").await, ids);

    // Revoke all but one (created on B) through A.
    let kept = ids.iter().nth(1).unwrap().clone();
    let (status, body) = json(a.delete(&format!("/v1/users/multi/sessions?except={kept}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], 5, "{body}");
    let revoked: BTreeSet<String> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        revoked,
        ids.iter().filter(|i| **i != kept).cloned().collect()
    );
    for id in &revoked {
        for node in [a, b] {
            let res = node
                .get(&format!("/v1/sessions/{id}"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 404, "revoked {id} still served");
        }
    }
    assert_eq!(listed(b, "multi").await, BTreeSet::from([kept.clone()]));
    for (node, id) in [(b, &kept), (b, &other)] {
        let (status, _): (u16, Value) = json(node.get(&format!("/v1/sessions/{id}"))).await;
        assert_eq!(status, 200, "untouched session {id}");
    }

    // Revoke the rest through B; A sees none left.
    let (status, body) = json(b.delete("/v1/users/multi/sessions")).await;
    assert_eq!(status, 200);
    assert_eq!(body["revoked"], 1);
    assert!(listed(a, "multi").await.is_empty());
}
