//! The real binary on SQLite: every acknowledged write survives `kill -9`, and SIGTERM is a
//! clean exit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::process::{Child, Command};

use serde_json::{json, Value};

// The real-binary spawner (it needs CARGO_BIN_EXE_sessiond, so it is not part of common/).
#[path = "common/binary.rs"]
mod binary;

/// Starts `sessiond serve` on SQLite in `data_dir` on a free port; returns it with its base URL.
fn spawn(data_dir: &std::path::Path) -> (Child, String) {
    let args = [
        OsStr::new("--engine"),
        OsStr::new("sqlite"),
        OsStr::new("--data-dir"),
    ];
    binary::serve(args.into_iter().chain([data_dir.as_os_str()]), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn(dir.path());
    let http = reqwest::Client::new();

    // Concurrent acknowledged writes: creates, then patches, plus cache entries.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(format!("{base}/v1/sessions"))
                .json(&json!({"user_id": format!("u{}", i % 10), "data": {"n": i}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            let body: Value = res.json().await.unwrap();
            let id = body["id"].as_str().unwrap().to_string();
            let res = http
                .patch(format!("{base}/v1/sessions/{id}"))
                .json(&json!({"data": {"patched": i}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let res = http
                .put(format!("{base}/v1/cache/durable/k{i}"))
                .json(&json!({"data": i}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204);
            (i, id)
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    child.kill().unwrap(); // SIGKILL: no flush, no shutdown hook.
    child.wait().unwrap();

    let (mut child, base) = spawn(dir.path());
    for (i, id) in &acked {
        let res = http
            .get(format!("{base}/v1/sessions/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "acknowledged session {i} survived");
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body["data"],
            json!({"n": i, "patched": i}),
            "acknowledged patch {i} survived"
        );
        assert_eq!(body["version"], 2);
        let res = http
            .get(format!("{base}/v1/cache/durable/k{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "acknowledged cache entry {i} survived");
    }
    let res = http
        .get(format!("{base}/v1/users/u3/sessions"))
        .send()
        .await
        .unwrap();
    let list: Value = res.json().await.unwrap();
    assert_eq!(
        list["sessions"].as_array().unwrap().len(),
        20,
        "the per-user index survived too"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _) = spawn(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--engine",
            "sqlite",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("SESSIOND_API_KEYS")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the second process must refuse to start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another sessiond process"),
        "clear message: {stderr}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = spawn(dir.path());
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"data": {"kept": true}}))
        .send()
        .await
        .unwrap();
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "clean exit on SIGTERM");

    let (mut child, base) = spawn(dir.path());
    let res = http
        .get(format!("{base}/v1/sessions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn refuses_public_address_without_api_key_and_checks_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["check-config", "--listen", "0.0.0.0:7700"])
        .env_remove("SESSIOND_API_KEYS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without an API key"),
        "clear message: {stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiond.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:7800\"\n[sessions]\nidle_ttl_s = 600\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["check-config", "--config"])
        .arg(&file)
        .env(
            "SESSIOND_API_KEYS",
            "first-key-0123456789,second-key-0123456789",
        )
        .env("SESSIOND_SESSIONS__MAX_SESSIONS_PER_USER", "7")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("idle_ttl_s = 600"), "file layer: {stdout}");
    assert!(
        stdout.contains("max_sessions_per_user = 7"),
        "env layer: {stdout}"
    );
    assert!(stdout.contains("0.0.0.0:7800"));
    assert!(!stdout.contains("first-key"), "keys are redacted");

    // Flags beat env and file.
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args([
            "check-config",
            "--listen",
            "127.0.0.1:7900",
            "--engine",
            "memory",
            "--config",
        ])
        .arg(&file)
        .env("SESSIOND_LISTEN", "127.0.0.1:7901")
        .env_remove("SESSIOND_API_KEYS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("127.0.0.1:7900") && stdout.contains("engine = \"memory\""),
        "{stdout}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["check-config", "--config"])
        .arg(&file)
        .env("SESSIOND_BOGUS_KEY", "1")
        .env("SESSIOND_API_KEYS", "only-key-0123456789")
        .output()
        .unwrap();
    assert!(!out.status.success(), "unknown keys are rejected");

    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sessiond.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["check-config", "--config"])
        .arg(&example)
        .env_remove("SESSIOND_API_KEYS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the example config is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
