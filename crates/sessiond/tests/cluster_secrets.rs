//! On the Redis engine (several nodes) a secret every node must share is never made per
//! process: without `middleware.signing_keys` the binary refuses to start and names the key;
//! with a shared key, or with the middleware off, it starts — and then a cookie signed by one
//! node is recognised by the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::process::{Command, Output};

use serde_json::{json, Value};
use sessiond_engine_redis::testing::RedisServer;

#[path = "common/binary.rs"]
mod binary;

fn sessiond(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    command
        .args(args)
        .env_remove("SESSIOND_API_KEYS")
        .env_remove("SESSIOND_MIDDLEWARE__SIGNING_KEYS");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn redis_engine_without_shared_signing_keys_is_refused_naming_the_key() {
    for verb in ["check-config", "serve"] {
        let out = sessiond(&[verb, "--engine", "redis", "--listen", "127.0.0.1:0"], &[]);
        assert!(!out.status.success(), "{verb} accepted it");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("middleware.signing_keys is empty")
                && stderr.contains("same middleware.signing_keys")
                && stderr.contains("every"),
            "{verb}: {stderr}"
        );
    }
    let key = format!("[{}]", "cd".repeat(32));
    let shared = sessiond(
        &["check-config", "--engine", "redis"],
        &[("SESSIOND_MIDDLEWARE__SIGNING_KEYS", &key)],
    );
    assert!(shared.status.success(), "{shared:?}");
    let off = sessiond(
        &["check-config", "--engine", "redis"],
        &[("SESSIOND_MIDDLEWARE__ENABLED", "false")],
    );
    assert!(off.status.success(), "{off:?}");
    // One node on SQLite keeps the convenient default (a random key, announced at start).
    let single = sessiond(&["check-config", "--engine", "sqlite"], &[]);
    assert!(single.status.success(), "{single:?}");
}

/// `POST /v1/middleware/decide` on `base` with `cookie`: the decision's `session` and the
/// `Cookie` header the browser sends next.
async fn decide(base: &str, cookie: &str) -> (Value, String) {
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/middleware/decide"))
        .json(&json!({"cookie": cookie, "ip": "192.0.2.7", "url": "https://app.example/", "method": "GET"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let jar = body["set_cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    (body["session"].clone(), jar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_the_shared_key_recognise_each_others_cookies() {
    let redis = RedisServer::start();
    let url = redis.url();
    let key = (
        "SESSIOND_MIDDLEWARE__SIGNING_KEYS",
        format!("[{}]", "ef".repeat(32)),
    );
    let node = || {
        let args = ["--engine", "redis", "--redis-url", &url].map(OsStr::new);
        binary::serve(args, std::slice::from_ref(&key))
    };
    let (mut a, base_a) = node();
    let (mut b, base_b) = node();
    let (first, jar) = decide(&base_a, "").await;
    assert_eq!(first["isNewClient"], true);
    let (again, _) = decide(&base_b, &jar).await;
    assert_eq!(again["isNewClient"], false, "{again}");
    assert_eq!(again["cID"], first["cID"]);
    for child in [&mut a, &mut b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
