//! On the Redis engine (several nodes) a secret every node must share is never made per
//! process: without `middleware.signing_keys` the binary refuses to start and names the key;
//! with a shared key, or with the middleware off, it starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

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
