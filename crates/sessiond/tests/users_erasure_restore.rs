//! An erasure outlives the restore of a backup taken before it: `sessiond restore` re-applies
//! the erasure list kept beside the database (`erasures.list`), so the erased user's sessions
//! and realtime state in the older backup do not come back; restoring into a directory without
//! the list brings them back, and the restore says so. Real binary, real SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

#[path = "common/binary.rs"]
mod binary;
use binary::Binary;

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

fn restore(backup: &Path, into: &Path) -> Output {
    sessiond(&[
        "restore".as_ref(),
        "--from".as_ref(),
        backup.as_os_str(),
        "--data-dir".as_ref(),
        into.as_os_str(),
    ])
}

async fn create(http: &reqwest::Client, server: &Binary, user: &str) -> String {
    let r = http
        .post(server.url("/v1/sessions"))
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn status(http: &reqwest::Client, server: &Binary, path: &str) -> u16 {
    http.get(server.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn grant(http: &reqwest::Client, server: &Binary, user: &str) {
    let r = http
        .post(server.url("/v1/realtime/grants"))
        .json(&json!({"user_id": user, "channel": "room:a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn grants(http: &reqwest::Client, server: &Binary, user: &str) -> Value {
    let r = http
        .get(server.url(&format!("/v1/users/{user}/export")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["realtime"]["state"]["grants"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_survives_the_restore_of_an_older_backup() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let http = reqwest::Client::new();
    let server = Binary::spawn(&data, &[]);
    let erased = create(&http, &server, "eve").await;
    let kept = create(&http, &server, "bob").await;
    grant(&http, &server, "eve").await;
    grant(&http, &server, "bob").await;

    let backup = root.path().join("backup");
    let out = sessiond(&[
        "backup".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--to".as_ref(),
        backup.as_os_str(),
    ]);
    assert!(out.status.success(), "backup failed: {}", stderr(&out));

    let r = http
        .delete(server.url("/v1/users/eve?confirm=eve"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        status(&http, &server, &format!("/v1/sessions/{erased}")).await,
        404
    );
    server.stop();
    let list = std::fs::read_to_string(data.join("erasures.list")).unwrap();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(
        !list.contains("eve"),
        "the list holds hashes, not ids: {list}"
    );

    // The operator empties the data directory but keeps the erasure list, then restores.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "erasures.list" {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let out = restore(&backup, &data);
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("erasure list of 1 user(s) re-applied (1 session(s), 1 object(s)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(data.join("erasures.list")).unwrap(),
        list,
        "the list stays for the next restore"
    );
    let server = Binary::spawn(&data, &[]);
    assert_eq!(
        status(&http, &server, &format!("/v1/sessions/{erased}")).await,
        404,
        "the erased user's session stays gone"
    );
    assert_eq!(grants(&http, &server, "eve").await, Value::Null);
    assert_eq!(
        status(&http, &server, &format!("/v1/sessions/{kept}")).await,
        200
    );
    assert_eq!(
        grants(&http, &server, "bob").await["room:a"]["publish"],
        false
    );
    server.stop();

    // Without the list (a fresh directory) the older backup brings the user back: the restore
    // warns, and the docs say to keep the file.
    let fresh = root.path().join("fresh");
    let out = restore(&backup, &fresh);
    assert!(out.status.success(), "restore failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("NOT erased again"),
        "{}",
        stderr(&out)
    );
    let server = Binary::spawn(&fresh, &[]);
    assert_eq!(
        status(&http, &server, &format!("/v1/sessions/{erased}")).await,
        200
    );
    server.stop();

    // Any other file in the target still refuses the restore.
    std::fs::write(data.join("stray"), "x").unwrap();
    let out = restore(&backup, &data);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
}
