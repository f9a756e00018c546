//! A storage failure answers the same through a sessions route, a streams route and a
//! `__ds` subscriptions route (docs/api.md#errors): a record the engine cannot decode is a
//! 500 `internal` without `Retry-After`, an unreachable engine a 503 `unavailable` with
//! `Retry-After: 1`, byte for byte the same body everywhere. Real listener, real Redis: the
//! records are damaged with `redis-cli`, then the server is cut off by stopping Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use serde_json::json;
use sessiond_engine_redis::testing::RedisServer;

const SUB: &str = "/v1/stream/__ds/subscriptions/errs";
const STREAM: &str = "/v1/stream/errs/a";

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(redis.port().to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The one key matching `pattern` (the key scheme is the engine's business; the test only
/// needs to find the record it damages).
fn key(redis: &RedisServer, pattern: &str) -> String {
    let keys = redis_cli(redis, &["--scan", "--pattern", pattern]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert_eq!(keys.len(), 1, "keys matching {pattern}: {keys:?}");
    keys[0].to_owned()
}

/// Status, `Retry-After` and body of a sessions, a streams and a subscriptions request.
async fn answers(server: &TestServer, session: &str) -> Vec<(u16, Option<String>, String)> {
    let requests = [
        server.get(&format!("/v1/sessions/{session}")),
        server.get(&format!("{STREAM}?offset=-1")),
        server.get(SUB),
    ];
    let mut out = Vec::new();
    for request in requests {
        let res = request.send().await.unwrap();
        let status = res.status().as_u16();
        let retry = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        out.push((status, retry, res.text().await.unwrap()));
    }
    out
}

#[tokio::test]
async fn corrupt_and_unreachable_storage_answer_alike_on_every_route() {
    let mut redis = RedisServer::start();
    let server = TestServer::start_node(&redis, |_| {}).await;

    let (status, created) = common::json(
        server
            .post("/v1/sessions")
            .json(&json!({"user_id": "u1", "data": {}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let session = created["id"].as_str().unwrap().to_owned();
    let res = server
        .put(STREAM)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let config = json!({"type": "pull-wake", "streams": ["errs/a"], "wake_stream": "errs/wake"});
    let res = server
        .put("/v1/stream/errs/wake")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (status, body) = common::json(server.put(SUB).json(&config)).await;
    assert_eq!(status, 201, "{body}");
    for (status, _, body) in answers(&server, &session).await {
        assert_eq!(status, 200, "{body}");
    }

    // Records the engine reads but cannot decode.
    let session_key = key(&redis, &format!("*{{s:{session}}}"));
    redis_cli(&redis, &["HSET", &session_key, "origin", "no-such-origin"]);
    let stream_key = key(&redis, "*{st:errs/a}:m");
    redis_cli(&redis, &["HSET", &stream_key, "state", "{not json"]);
    let sub_key = key(&redis, "*{o:ds_subscription:errs}:state");
    redis_cli(&redis, &["SET", &sub_key, "{not json"]);
    let corrupt = answers(&server, &session).await;
    let internal = r#"{"error":{"code":"internal","message":"internal server error"}}"#;
    for answer in &corrupt {
        assert_eq!(answer, &(500, None, internal.to_owned()));
    }

    // The engine is gone.
    redis.stop();
    let unavailable = answers(&server, &session).await;
    let retry =
        r#"{"error":{"code":"unavailable","message":"storage engine unavailable, retry later"}}"#;
    for answer in &unavailable {
        assert_eq!(answer, &(503, Some("1".to_owned()), retry.to_owned()));
    }
    drop(server);
}
