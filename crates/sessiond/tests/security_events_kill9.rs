//! The real binary on SQLite, killed with SIGKILL while security events are still queued: every
//! acknowledged session change has its event after the restart (the event was committed with
//! the change, in the outbox, and the relay delivers it once the server runs again).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::process::Child;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/security_changes.rs"]
mod security_changes;

use security_changes::{changes, wait_for_all};

const KEY: &str = "kill-9-security-key-0123456789abcdef";

/// `sessiond serve` on SQLite in `data_dir`, relaying one event per batch (so the relay lags
/// far behind the acknowledged changes when the process is killed).
fn spawn(data_dir: &std::path::Path) -> (Child, String) {
    let args = [
        OsStr::new("--engine"),
        OsStr::new("sqlite"),
        OsStr::new("--data-dir"),
    ];
    binary::serve(
        args.into_iter().chain([data_dir.as_os_str()]),
        &[
            ("SESSIOND_SECURITY__RELAY_BATCH", "1".into()),
            ("SESSIOND_API_KEYS", KEY.into()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_have_their_events_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn(dir.path());
    let http = reqwest::Client::new();
    let acked = changes(&http, &base, KEY, 120, false).await;
    child.kill().unwrap(); // SIGKILL: no flush, no shutdown hook, no relay pass.
    child.wait().unwrap();

    let (mut child, base) = spawn(dir.path());
    wait_for_all(&http, &base, KEY, &acked).await;
    child.kill().unwrap();
    child.wait().unwrap();
}
