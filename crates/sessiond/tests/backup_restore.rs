//! `sessiond backup` / `sessiond restore` with the real binary: a backup taken while sessions
//! are created and a JSON stream is appended to (with sealed cold segments) restores into a
//! fresh directory where a new server finds every write acknowledged before the backup began.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "common/binary.rs"]
mod binary;
use binary::Binary;

/// A tiny cold-tier policy so a few kilobytes of appends seal segments within seconds.
fn cold_env() -> Vec<(&'static str, String)> {
    vec![
        ("SESSIOND_STREAMS__COLD__MIN_SEGMENT_BYTES", "2000".into()),
        ("SESSIOND_STREAMS__COLD__MAX_SEGMENT_BYTES", "4000".into()),
        ("SESSIOND_STREAMS__COLD__KEEP_HOT_BYTES", "1500".into()),
        ("SESSIOND_STREAMS__COLD__MAX_AGE_S", "0".into()),
        ("SESSIOND_STREAMS__COLD__INTERVAL_S", "1".into()),
    ]
}

fn sessiond(args: &[&std::ffi::OsStr]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(args)
        .env_remove("SESSIOND_API_KEYS")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every `.seg` file under `dir`.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "seg") {
                found.push(p);
            }
        }
    }
    found
}

/// Acknowledgements: what was written and when the answer arrived.
type Acks = Arc<std::sync::Mutex<Vec<(Value, Instant)>>>;

async fn write_sessions(http: reqwest::Client, base: String, stop: Arc<AtomicBool>, acks: Acks) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let r = http
            .post(format!("{base}/v1/sessions"))
            // One user per session: a user's oldest sessions are evicted past the per-user cap.
            .json(&json!({"user_id": format!("load-{n}"), "data": {"n": n}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["id"].clone();
        acks.lock().unwrap().push((id, Instant::now()));
        n += 1;
    }
}

async fn append_stream(http: reqwest::Client, url: String, stop: Arc<AtomicBool>, acks: Acks) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(json!({"n": n, "pad": "p".repeat(100)}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        acks.lock().unwrap().push((json!(n), Instant::now()));
        n += 1;
    }
}

/// Every message of a JSON stream, from the start (cold segments included), by catch-up reads.
async fn read_messages(http: &reqwest::Client, url: &str) -> Vec<u64> {
    let mut offset = "-1".to_string();
    let mut out = Vec::new();
    loop {
        let r = http
            .get(format!("{url}?offset={offset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let next = r.headers()["stream-next-offset"]
            .to_str()
            .unwrap()
            .to_owned();
        let done = r.headers().contains_key("stream-up-to-date");
        let page: Vec<Value> = r.json().await.unwrap();
        out.extend(page.iter().map(|m| m["n"].as_u64().unwrap()));
        if done {
            return out;
        }
        offset = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_every_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let server = Binary::spawn(&data, &cold_env());
    let http = reqwest::Client::new();
    let stream = server.url("/v1/stream/load/orders");
    let r = http
        .put(&stream)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let stop = Arc::new(AtomicBool::new(false));
    let sessions: Acks = Default::default();
    let appends: Acks = Default::default();
    let writers = [
        tokio::spawn(write_sessions(
            http.clone(),
            server.base.clone(),
            stop.clone(),
            sessions.clone(),
        )),
        tokio::spawn(append_stream(
            http.clone(),
            stream.clone(),
            stop.clone(),
            appends.clone(),
        )),
    ];
    // Load until the cold tier holds several sealed segments.
    let deadline = Instant::now() + Duration::from_secs(60);
    while segment_files(&data.join("segments")).len() < 3 {
        assert!(Instant::now() < deadline, "no segments sealed under load");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let backup = root.path().join("backup");
    let started = Instant::now();
    let out = {
        let (data, backup) = (data.clone(), backup.clone());
        tokio::task::spawn_blocking(move || {
            sessiond(&[
                "backup".as_ref(),
                "--data-dir".as_ref(),
                data.as_os_str(),
                "--to".as_ref(),
                backup.as_os_str(),
            ])
        })
        .await
        .unwrap()
    };
    let finished = Instant::now();
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    assert!(stderr(&out).contains("backup: done"), "{}", stderr(&out));
    // The writers kept going while the backup ran.
    let during = |acks: &Acks| {
        acks.lock()
            .unwrap()
            .iter()
            .filter(|(_, t)| *t > started && *t < finished)
            .count()
    };
    assert!(
        during(&sessions) > 0 && during(&appends) > 0,
        "no write during the backup"
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    drop(server);

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    let copied = manifest["segments"].as_array().unwrap().len();
    assert!(copied >= 3, "segments in the backup: {manifest}");
    assert_eq!(segment_files(&backup.join("segments")).len(), copied);
    assert!(!root.path().join("backup.partial").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the backup is private to its owner");
    }

    // Restore refuses a non-empty target and then fills a fresh one.
    let busy = root.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep"), "x").unwrap();
    let refuse = sessiond(&[
        "restore".as_ref(),
        "--from".as_ref(),
        backup.as_os_str(),
        "--data-dir".as_ref(),
        busy.as_os_str(),
    ]);
    assert!(!refuse.status.success());
    assert!(stderr(&refuse).contains("not empty"), "{}", stderr(&refuse));
    assert_eq!(
        std::fs::read_dir(&busy).unwrap().count(),
        1,
        "nothing written"
    );

    // A referenced segment file that is gone (here: removed from the stopped server's
    // directory) makes the backup fail rather than produce a copy missing data.
    let referenced = manifest["segments"][0]["key"].as_str().unwrap();
    std::fs::remove_file(data.join("segments").join(referenced)).unwrap();
    let broken = root.path().join("broken");
    let out = sessiond(&[
        "backup".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--to".as_ref(),
        broken.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("were gone"), "{}", stderr(&out));
    assert!(!broken.exists() && !root.path().join("broken.partial").exists());

    let restored = root.path().join("restored");
    let out = sessiond(&[
        "restore".as_ref(),
        "--from".as_ref(),
        backup.as_os_str(),
        "--data-dir".as_ref(),
        restored.as_os_str(),
    ]);
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    assert_eq!(segment_files(&restored.join("segments")).len(), copied);

    let server = Binary::spawn(&restored, &cold_env());
    let before = |acks: &Acks| -> Vec<Value> {
        acks.lock()
            .unwrap()
            .iter()
            .filter(|(_, t)| *t < started)
            .map(|(v, _)| v.clone())
            .collect()
    };
    let ids = before(&sessions);
    assert!(!ids.is_empty());
    for (i, id) in ids.iter().enumerate() {
        let r = http
            .get(server.url(&format!("/v1/sessions/{}", id.as_str().unwrap())))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "session {i}/{} ({id}) acknowledged before the backup",
            ids.len()
        );
    }
    let messages = read_messages(&http, &server.url("/v1/stream/load/orders")).await;
    let expected: Vec<u64> = (0..messages.len() as u64).collect();
    assert_eq!(
        messages, expected,
        "the restored stream is a gapless prefix"
    );
    let acked = before(&appends).len();
    assert!(
        messages.len() >= acked,
        "{} messages restored, {acked} acknowledged before the backup",
        messages.len()
    );
}

#[test]
fn backup_refuses_redis_and_an_existing_target() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("sessiond.toml");
    let key = "ab".repeat(32);
    std::fs::write(
        &config,
        format!("engine = \"redis\"\n[middleware]\nsigning_keys = [\"{key}\"]\n"),
    )
    .unwrap();
    let out = sessiond(&[
        "backup".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--to".as_ref(),
        root.path().join("b").as_os_str(),
    ]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("engine = redis") && text.contains("RDB"),
        "{text}"
    );

    let out = sessiond(&[
        "backup".as_ref(),
        "--data-dir".as_ref(),
        root.path().join("data").as_os_str(),
        "--to".as_ref(),
        root.path().as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}
