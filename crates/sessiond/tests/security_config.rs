//! Start-up refuses empty and short secrets, with the real binary: exit code and a message
//! that names the key to fix (never its value).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `sessiond serve` with `toml` as its config (memory engine, port 0) and `env`; returns
/// (exit success, stderr). A config that passes would keep serving, so every case here must
/// be refused.
fn serve(toml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sessiond.toml");
    std::fs::write(&file, format!("engine = \"memory\"\n{toml}")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    command
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("SESSIOND_API_KEYS");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refused configuration exits at once; one that is accepted keeps serving, which is
    // reported as success (and killed) after the deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (exited.is_none_or(|status| status.success()), stderr)
}

fn refused(toml: &str, env: &[(&str, &str)], names: &str) {
    let (ok, stderr) = serve(toml, env);
    assert!(!ok, "{toml} {env:?} must be refused");
    assert!(
        stderr.contains(names),
        "message for {toml} {env:?} names `{names}`: {stderr}"
    );
}

const LONG: &str = "a-key-of-more-than-thirty-two-bytes-0123456789";

#[test]
fn empty_and_short_keys_are_refused_at_start_up() {
    let public = "listen = \"0.0.0.0:0\"\n";
    // A stray comma is not "no key": it is two empty keys.
    refused(public, &[("SESSIOND_API_KEYS", ",")], "api_keys[0]");
    refused(&format!("{public}api_keys = [\"\"]"), &[], "is empty");
    refused(
        &format!("{public}api_keys = [\"{LONG}\", \"short-key\"]"),
        &[],
        "api_keys[1] (or --api-key / SESSIOND_API_KEYS) is 9 bytes long: it needs at least 16",
    );
    refused(
        &format!("{public}[[streams.keys]]\nkey = \"tenant\"\nstream_prefixes = [\"t/\"]\n"),
        &[],
        "streams.keys[0].key is 6 bytes long",
    );
    let keyed = format!("api_keys = [\"{LONG}\"]\n");
    for (section, name) in [
        ("[realtime]\ngrant_keys", "realtime.grant_keys[0]"),
        (
            "[realtime.events]\nwebhook_keys",
            "realtime.events.webhook_keys[0]",
        ),
        (
            "[streams]\nread_token_secrets",
            "streams.read_token_secrets[0]",
        ),
        ("[middleware]\nsigning_keys", "middleware.signing_keys[0]"),
    ] {
        // 31 bytes: long enough for a bearer key, too short for a MAC key.
        refused(
            &format!("{keyed}{section} = [\"{}\"]\n", "k".repeat(31)),
            &[],
            &format!("{name} is 31 bytes long: it needs at least 32"),
        );
        refused(&format!("{keyed}{section} = [\"\"]\n"), &[], name);
    }
    refused(
        &format!("{keyed}[middleware.fingerprint]\nsecret = \"short\"\n"),
        &[],
        "middleware.fingerprint.secret",
    );
    // The message never shows the key itself.
    let (_, stderr) = serve(&format!("{public}api_keys = [\"short-secret\"]"), &[]);
    assert!(!stderr.contains("short-secret"), "{stderr}");
}

#[test]
fn the_admin_console_is_never_open_beyond_loopback() {
    let public = "listen = \"0.0.0.0:0\"\n";
    let tenant = "[[streams.keys]]\nkey = \"tenant-key-0123456789\"\nstream_prefixes = [\"t/\"]\n";
    // A scoped stream key lets the server listen publicly, but nobody could log in to the
    // console with it: refused, naming the keys to set.
    refused(
        &format!("{public}{tenant}[admin]\nenabled = true\n"),
        &[],
        "admin.enabled on 0.0.0.0:0 (not loopback) needs a key to log in with: set admin.key",
    );
    // The console's own key counts, and is held to the bearer-key length.
    refused(
        &format!("{public}[admin]\nenabled = true\nkey = \"short\"\n"),
        &[],
        "admin.key is 5 bytes long",
    );
    // With its own key the console may face the network; the key is then a full key.
    let mut config = sessiond::config::Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    config.admin.enabled = true;
    config.admin.key = LONG.into();
    config.validate().unwrap();
    assert!(!config.open_mode());
    assert!(config.server_keys().accepts(LONG.as_bytes()));
    // A disabled console's key opens nothing.
    config.admin.enabled = false;
    config.api_keys = vec!["another-key-0123456789".into()];
    assert!(!config.server_keys().accepts(LONG.as_bytes()));
}
