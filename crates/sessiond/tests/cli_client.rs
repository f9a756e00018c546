//! The operator CLI against a running server (the real binary on both ends): `sessions list`,
//! `sessions revoke`, `streams ls` (paged) and `streams tail` (live, until the stream closes),
//! with the URL from `--url` or `SESSIONCTL_URL` and the key from `SESSIONCTL_API_KEY`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

#[path = "common/binary.rs"]
mod binary;
use binary::Binary;

const KEY: &str = "cli-test-key-0123456789abcdef";

fn server(dir: &std::path::Path) -> Binary {
    Binary::spawn(dir, &[("SESSIOND_API_KEYS", KEY.to_string())])
}

/// `sessiond <args>` as an operator runs it: key in the environment, nothing else inherited.
fn cli(key: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    c.env_remove("SESSIOND_API_KEYS")
        .env_remove("SESSIONCTL_URL")
        .env_remove("SESSIONCTL_API_KEY")
        .env_remove("RUST_LOG");
    if let Some(key) = key {
        c.env("SESSIONCTL_API_KEY", key);
    }
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn create_session(s: &Binary, user: &str) -> String {
    let r = http()
        .post(s.url("/v1/sessions"))
        .bearer_auth(KEY)
        .json(&json!({"user_id": user, "device": {"user_agent": "cli-test"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn session_status(s: &Binary, id: &str) -> u16 {
    http()
        .get(s.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn sessions_list_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let alice = [
        create_session(&s, "alice").await,
        create_session(&s, "alice").await,
    ];
    let bob = create_session(&s, "bob").await;

    let out = run(cli(Some(KEY)).args(["sessions", "list", "--user", "alice", "--url", &s.base]));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "header + two sessions: {text}");
    assert!(
        lines[1].starts_with(&alice[0]) && lines[2].starts_with(&alice[1]),
        "{text}"
    );
    assert!(text.contains("cli-test") && !text.contains(&bob), "{text}");

    // The URL from the environment, JSON output.
    let out = run(cli(Some(KEY))
        .env("SESSIONCTL_URL", &s.base)
        .args(["sessions", "list", "--user", "alice", "--json"]));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["sessions"].as_array().unwrap().len(), 2);

    // No key: the server's 401, with a hint where the key comes from.
    let out = cli(None)
        .args(["sessions", "list", "--user", "alice", "--url", &s.base])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") && err.contains("SESSIONCTL_API_KEY"),
        "{err}"
    );

    let out = run(cli(Some(KEY)).args(["sessions", "revoke", "--user", "alice", "--url", &s.base]));
    let mut revoked: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    revoked.sort();
    let mut expected = alice.to_vec();
    expected.sort();
    assert_eq!(revoked, expected);
    for id in &alice {
        assert_eq!(session_status(&s, id).await, 404, "revoked");
    }
    assert_eq!(
        session_status(&s, &bob).await,
        200,
        "another user's session stays"
    );
}

#[tokio::test]
async fn streams_ls_follows_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let mut made = Vec::new();
    for name in ["a/1", "a/2", "a/3", "a/4", "a/5", "b/1"] {
        let r = http()
            .put(s.url(&format!("/v1/stream/{name}")))
            .bearer_auth(KEY)
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        made.push(name);
    }
    let out =
        run(cli(Some(KEY)).args(["streams", "ls", "a/", "--page-size", "2", "--url", &s.base]));
    let text = stdout(&out);
    let paths: Vec<&str> = text
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(paths, ["a/1", "a/2", "a/3", "a/4", "a/5"], "{text}");
    assert!(
        text.lines().all(|l| l.ends_with("text/plain\t5\topen")),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("5 stream(s)"));
}

#[tokio::test]
async fn streams_tail_prints_messages_live_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let url = s.url("/v1/stream/orders/live");
    let append = |body: &'static str, close: bool| {
        let mut r = http()
            .post(&url)
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body);
        if close {
            r = r.header("stream-closed", "true");
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let r = http()
        .put(&url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(r#"[{"n":1},{"n":2}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let mut child = cli(Some(KEY))
        .args([
            "streams",
            "tail",
            "orders/live",
            "--offset",
            "-1",
            "--url",
            &s.base,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    std::thread::spawn(move || {
        for line in lines {
            let _ = tx.send(line.unwrap());
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a line from tail")
    };
    assert_eq!(next(), r#"{"n":1}"#);
    assert_eq!(next(), r#"{"n":2}"#);
    // Caught up; what is appended now arrives live, message by message, byte for byte.
    assert_eq!(append(r#"{"n": 3 }"#, false).await, 204);
    assert_eq!(next(), r#"{"n": 3 }"#);
    assert_eq!(append(r#"{"n":4}"#, true).await, 204);
    assert_eq!(next(), r#"{"n":4}"#);
    // Closing the stream ends the command cleanly.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tail did not exit after the stream was closed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
}
