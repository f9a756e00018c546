//! One hot stream appended through three sessiond nodes on one Redis, as `bench/cluster/run`
//! does: every append acknowledged (never 503), held exactly once, producers deduplicated
//! across nodes, and what it costs. Its own test binary because the metrics recorder is
//! process-wide: the three in-process nodes share it, and no other test may add to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{counter, TestServer};
use sessiond_engine_redis::testing::RedisServer;

const URL: &str = "/v1/stream/nodes/hot";
/// Anonymous writers, producer writers, appends each.
const WRITERS: usize = 36;
const PRODUCERS: usize = 12;
const EACH: usize = 6;

/// One append through `s`; returns (status, the piece it carried).
async fn append(s: &TestServer, piece: String, producer: Option<(usize, usize)>) -> u16 {
    let mut req = s.post(URL).header("content-type", "text/plain");
    if let Some((w, seq)) = producer {
        req = req
            .header("producer-id", format!("p{w:02}"))
            .header("producer-epoch", "1")
            .header("producer-seq", seq.to_string());
    }
    req.body(piece).send().await.unwrap().status().as_u16()
}

/// The `/metrics` text of `s`.
async fn metrics(s: &TestServer) -> String {
    let res = s.get("/metrics").send().await.unwrap();
    res.text().await.unwrap()
}

/// Round trips by `op` label.
fn round_trips(text: &str) -> std::collections::BTreeMap<String, f64> {
    let prefix = "sessiond_engine_redis_round_trips_total{op=\"";
    text.lines()
        .filter_map(|l| {
            let (op, value) = l.strip_prefix(prefix)?.split_once("\"} ")?;
            Some((op.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The process-wide counters that price an append: commit round trips, every round trip,
/// retries after a lost compare, acknowledged appends.
async fn costs(s: &TestServer) -> [f64; 4] {
    let text = metrics(s).await;
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    [
        counter(
            s,
            "sessiond_engine_redis_round_trips_total{op=\"stream_commit\"}",
        )
        .await,
        sum("sessiond_engine_redis_round_trips_total{"),
        sum("sessiond_streams_commit_retries_total"),
        sum("sessiond_streams_appends_total{"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_hammered_through_three_nodes_costs_one_commit_per_append() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Arc::new(TestServer::start_node(&redis, |_| {}).await));
    }
    let res = nodes[0]
        .put(URL)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Every node has the stream cached, as a long-running one would.
    for n in &nodes {
        assert_eq!(n.get(URL).send().await.unwrap().status(), 200);
    }
    let before = costs(&nodes[0]).await;
    let ops_before = round_trips(&metrics(&nodes[0]).await);

    // Each writer sends its appends one after another, each through the next node; a
    // producer's sequence numbers thus arrive at every node in turn.
    let mut tasks = Vec::new();
    for w in 0..WRITERS + PRODUCERS {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..EACH {
                let producer = (w >= WRITERS).then_some((w, i));
                let node = &nodes[(w + i) % 3];
                statuses.push(append(node, format!("<{w:02}{i}>"), producer).await);
            }
            (w, statuses)
        }));
    }
    for t in tasks {
        let (w, statuses) = t.await.unwrap();
        let ok = if w >= WRITERS { 200 } else { 204 };
        assert!(
            statuses.iter().all(|s| *s == ok),
            "writer {w}: every append acknowledged: {statuses:?}"
        );
    }
    let after = costs(&nodes[0]).await;
    for (op, n) in round_trips(&metrics(&nodes[0]).await) {
        let delta = n - ops_before.get(&op).copied().unwrap_or(0.0);
        if delta > 0.0 {
            eprintln!("round trips {op}: {delta}");
        }
    }
    let [commits, trips, retries, appends] = [0, 1, 2, 3].map(|i| after[i] - before[i]);
    let total = ((WRITERS + PRODUCERS) * EACH) as f64;
    assert_eq!(appends, total, "every append counted once");
    eprintln!(
        "{total} appends: {:.3} commits, {:.3} round trips, {:.3} retries per append",
        commits / total,
        trips / total,
        retries / total
    );
    assert!(
        commits / total <= 1.2,
        "{commits} commit round trips for {total} appends ({retries} retries)"
    );

    // A producer's retry through another node is answered as a duplicate, not appended.
    for w in WRITERS..WRITERS + PRODUCERS {
        for i in 0..EACH {
            let node = &nodes[(w + i + 1) % 3];
            let status = append(node, format!("<{w:02}{i}>"), Some((w, i))).await;
            assert_eq!(status, 204, "producer {w} seq {i} retried: a duplicate");
        }
    }
    let res = nodes[2]
        .post(URL)
        .header("content-type", "text/plain")
        .header("producer-id", format!("p{WRITERS:02}"))
        .header("producer-epoch", "1")
        .header("producer-seq", (EACH + 1).to_string())
        .body("gap")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        409,
        "a gap is refused whichever node saw the last seq"
    );
    assert_eq!(
        res.headers()["producer-expected-seq"].to_str().unwrap(),
        EACH.to_string()
    );

    let body = nodes[1]
        .get(&format!("{URL}?offset=-1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.len() as f64, total * 5.0, "no gap, no duplicate");
    let mut pieces: Vec<&str> = body
        .as_bytes()
        .chunks(5)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    pieces.sort_unstable();
    let mut expected: Vec<String> = (0..WRITERS + PRODUCERS)
        .flat_map(|w| (0..EACH).map(move |i| format!("<{w:02}{i}>")))
        .collect();
    expected.sort_unstable();
    assert_eq!(pieces, expected);

    // The state checks stay exact when the nodes' cached metadata lags: a Stream-Seq, a
    // content type and a close decided through one node bind the others.
    let post = |n: usize, ct: &str, seq: Option<&str>| {
        let mut req = nodes[n].post(URL).header("content-type", ct);
        if let Some(seq) = seq {
            req = req.header("stream-seq", seq);
        }
        async move { req.body("<seq>").send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(0, "text/plain", Some("b")).await, 204);
    assert_eq!(
        post(1, "text/plain", Some("a")).await,
        409,
        "Stream-Seq regressed"
    );
    assert_eq!(
        post(2, "text/plain", Some("b")).await,
        409,
        "Stream-Seq repeated"
    );
    assert_eq!(post(1, "application/json", None).await, 409, "content type");
    let close = nodes[2]
        .post(URL)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), 204);
    for n in 0..3 {
        assert_eq!(
            post(n, "text/plain", None).await,
            409,
            "closed, via node {n}"
        );
    }
    let body = nodes[0]
        .get(&format!("{URL}?offset=-1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        body.len() as f64,
        total * 5.0 + 5.0,
        "one Stream-Seq append more"
    );
}
