//! Byte budgets of channel history and presence metas (per channel and in total; oldest
//! history dropped first, recovery then says `recovered: false`), and the socket caps
//! (`max_connections`, `max_connections_per_user`: close 1013), measured through
//! `/v1/realtime/stats` and `/metrics`. Real server, real WebSocket clients.
//!
//! One test function: the gauges are process-wide, so no other server of this test binary
//! may publish while it reads them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{json, TestServer};
use realtime_support::{connect, session, Ws};
use serde_json::{json, Value};
use sessiond::config::EngineKind;

async fn publish(s: &TestServer, channel: &str, bytes: usize) {
    let (status, body) = json(
        s.post("/v1/realtime/publish")
            .json(&json!({"channel": channel, "data": "x".repeat(bytes)})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn stats(s: &TestServer) -> Value {
    json(s.get("/v1/realtime/stats")).await.1
}

/// The value of the metric line starting with `prefix` (labels included in the prefix).
async fn metric(s: &TestServer, prefix: &str) -> f64 {
    let text = s
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn v1(s: &TestServer, user: &str) -> Ws {
    let token = session(s, user, None).await;
    let mut ws = connect(s, &format!("/v1/realtime?token={token}"), &[])
        .await
        .open();
    ws.expect("connected").await;
    ws
}

/// Subscribes from `since` offset 0 of `epoch` (or plainly); returns the reply.
async fn subscribe(ws: &mut Ws, channel: &str, since: Option<(&str, u64)>, meta: Value) -> Value {
    let since = since.map(|(epoch, offset)| json!({"epoch": epoch, "offset": offset}));
    ws.send(json!({"type": "subscribe", "channel": channel, "since": since, "meta": meta}))
        .await;
    ws.next().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_presence_stay_within_their_byte_budgets_and_sockets_within_their_caps() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.realtime.recovery_max_bytes = 4096;
        c.realtime.history_max_bytes = 16 * 1024;
        c.realtime.presence_max_bytes_per_channel = 1024;
        c.realtime.presence_max_bytes = 4096;
        c.realtime.max_connections = 6;
        c.realtime.max_sockets_per_user = 3;
    })
    .await;
    let mut watcher = v1(&s, "watcher").await;

    // Per channel: ten 1 KB messages keep only what fits 4 KiB, oldest dropped first.
    let epoch = subscribe(&mut watcher, "user:watcher", None, Value::Null).await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    watcher.expect("presence_state").await;
    for _ in 0..10 {
        publish(&s, "user:watcher", 1000).await;
    }
    let kept = stats(&s).await["history_bytes"].as_u64().unwrap();
    assert!(kept > 0 && kept <= 4096, "user:watcher keeps {kept} bytes");
    let mut late = v1(&s, "watcher").await;
    let lost = subscribe(&mut late, "user:watcher", Some((&epoch, 1)), Value::Null).await;
    assert_eq!(lost["recovered"], false, "message 2 was dropped: {lost}");
    late.expect("presence_state").await;
    let mut late2 = v1(&s, "watcher").await;
    let recent = subscribe(&mut late2, "user:watcher", Some((&epoch, 9)), Value::Null).await;
    assert_eq!(recent["recovered"], true, "{recent}");
    assert_eq!(recent["messages"].as_array().unwrap().len(), 1);

    // In total: 8 channels × 3 KB exceed the 16 KiB budget; the oldest messages go first.
    for i in 0..8 {
        for _ in 0..3 {
            publish(&s, &format!("user:b{i}"), 1000).await;
        }
    }
    let total = stats(&s).await["history_bytes"].as_u64().unwrap();
    assert!(total <= 16 * 1024, "all histories keep {total} bytes");
    assert_eq!(
        metric(&s, "sessiond_realtime_history_bytes").await,
        total as f64,
        "the gauge shows the same bytes"
    );
    let (mut b0, mut b7) = (v1(&s, "b0").await, v1(&s, "b7").await);
    let first = subscribe(&mut b0, "user:b0", None, Value::Null).await;
    let epoch_b0 = first["epoch"].as_str().unwrap().to_string();
    b0.expect("presence_state").await;
    let oldest = subscribe(&mut b0, "user:b0", Some((&epoch_b0, 0)), Value::Null).await;
    assert_eq!(
        oldest["recovered"], false,
        "user:b0's oldest were shed: {oldest}"
    );
    let newest = subscribe(&mut b7, "user:b7", None, Value::Null).await;
    let epoch_b7 = newest["epoch"].as_str().unwrap().to_string();
    b7.expect("presence_state").await;
    let newest = subscribe(&mut b7, "user:b7", Some((&epoch_b7, 0)), Value::Null).await;
    assert_eq!(
        newest["recovered"], true,
        "user:b7 kept everything: {newest}"
    );

    // Presence metas: one that does not fit the channel's budget is refused.
    let mut p = v1(&s, "p").await;
    let refused = subscribe(&mut p, "user:p", None, json!({"bio": "y".repeat(1500)})).await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("limit_reached")),
        "{refused}"
    );
    let ok = subscribe(&mut p, "user:p", None, json!({"status": "here"})).await;
    assert_eq!(ok["type"], "subscribed", "{ok}");
    p.expect("presence_state").await;
    let presence = stats(&s).await["presence_bytes"].as_u64().unwrap();
    assert!(presence > 0 && presence <= 4096, "{presence}");
    assert_eq!(
        metric(&s, "sessiond_realtime_presence_bytes").await,
        presence as f64
    );

    // Sockets: close down to the watcher, then fill the caps.
    drop((late, late2, b0, p));
    b7.close().await;
    realtime_support::eventually("sockets closed", || async {
        stats(&s).await["connections"] == 1
    })
    .await;
    let token = session(&s, "u1", None).await;
    let path = format!("/v1/realtime?token={token}");
    let mut open = vec![v1(&s, "u1").await, v1(&s, "u1").await, v1(&s, "u1").await];
    // Per user (3): the user's fourth socket is closed at once with 1013.
    let mut third = connect(&s, &path, &[]).await.open();
    assert_eq!(
        third.closed().await,
        (1013, "Too many connections for this user".to_string())
    );
    assert!(
        metric(
            &s,
            "sessiond_realtime_connections_refused_total{cap=\"user\"}"
        )
        .await
            >= 1.0
    );
    // In total (6): watcher + 3 + 2 = 6, the seventh is closed the same way.
    open.push(v1(&s, "u2").await);
    open.push(v1(&s, "u2").await);
    let token = session(&s, "u3", None).await;
    let mut fifth = connect(&s, &format!("/v1/realtime?token={token}"), &[])
        .await
        .open();
    assert_eq!(
        fifth.closed().await,
        (1013, "Too many connections".to_string())
    );
    assert!(
        metric(
            &s,
            "sessiond_realtime_connections_refused_total{cap=\"total\"}"
        )
        .await
            >= 1.0
    );
    // SSE past a cap: 429 (an HTTP answer it can read).
    let (status, _) = json(
        s.get(&format!("/v1/realtime/sse?channels=user:u3&token={token}"))
            .header("accept", "text/event-stream"),
    )
    .await;
    assert_eq!(status, 429);
    drop(open);
}
