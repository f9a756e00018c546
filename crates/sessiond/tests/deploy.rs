//! The files in deploy/ work with this build: the systemd unit passes `systemd-analyze verify`
//! without a single warning, and the command lines of the unit and of the Dockerfile are
//! accepted by the binary (run as `check-config` with the same flags and environment).
//!
//! `systemd-analyze` comes with Debian's `systemd` package, which `./scripts/test` installs
//! and where it sets `REQUIRE_SYSTEMD_ANALYZE=1`; elsewhere a missing tool skips that check
//! with a printed reason. The Docker image itself is not built here (no container runtime).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sessiond");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

/// `systemd-analyze verify` of `unit` (written as sessiond.service in a temp dir): (ok, output).
fn verify(unit: &str) -> Option<(bool, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

/// Runs the binary with `args` (the first one, a serve command, turned into `check-config`).
fn check_config(args: &[String], env: &[(&str, &str)]) {
    assert_eq!(args[0], "serve", "{args:?}");
    let mut command = Command::new(BIN);
    command
        .arg("check-config")
        .args(&args[1..])
        .env_remove("SESSIOND_API_KEYS");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_verifies_cleanly_and_its_command_line_is_valid() {
    let unit = read("deploy/sessiond.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut args: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(args.remove(0), "/usr/local/bin/sessiond");
    // The flags, with the config and data paths pointed at test files.
    let dir = tempfile::tempdir().unwrap();
    for (i, arg) in args.clone().iter().enumerate() {
        match arg.as_str() {
            "/etc/sessiond/sessiond.toml" => {
                args[i] = repo().join("sessiond.example.toml").display().to_string()
            }
            "/var/lib/sessiond" => args[i] = dir.path().display().to_string(),
            _ => {}
        }
    }
    check_config(&args, &[]);

    // verify checks that ExecStart is executable: point it at this build.
    let local = unit.replace("/usr/local/bin/sessiond", BIN);
    let Some((ok, output)) = verify(&local) else {
        assert!(
            std::env::var_os("REQUIRE_SYSTEMD_ANALYZE").is_none(),
            "systemd-analyze is required here but missing"
        );
        println!("SKIPPED: systemd-analyze not installed (Debian package `systemd`)");
        return;
    };
    assert!(ok && output.trim().is_empty(), "systemd-analyze: {output}");
    // The check notices mistakes: a misspelt directive is reported.
    let typo = local.replace("ProtectHome=yes", "ProtectHomes=yes");
    let (_, output) = verify(&typo).unwrap();
    assert!(output.contains("ProtectHomes"), "{output}");
}

#[test]
fn dockerfile_runs_as_non_root_with_a_data_volume_a_readyz_check_and_a_valid_command() {
    let file = read("deploy/Dockerfile");
    let directives: Vec<&str> = file
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' '))
        .collect();
    let stages = directives.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage build");
    let user = directives
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    assert!(directives.contains(&"VOLUME [\"/data\"]"));
    let health = file
        .split("HEALTHCHECK")
        .nth(1)
        .expect("HEALTHCHECK")
        .lines()
        .take(2)
        .collect::<String>();
    assert!(health.contains("http://127.0.0.1:7700/readyz"), "{health}");
    // The image's command, as the binary sees it (data volume -> a temp dir, with the API
    // key a non-loopback listener needs).
    let cmd = directives
        .iter()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let args: Vec<String> = serde_json::from_str(cmd).unwrap();
    assert!(args.windows(2).any(|w| w == ["--listen", "0.0.0.0:7700"]));
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = args
        .into_iter()
        .map(|a| match a.as_str() {
            "/data" => dir.path().display().to_string(),
            _ => a,
        })
        .collect();
    check_config(
        &args,
        &[("SESSIOND_API_KEYS", "docker-test-key-0123456789abcdef")],
    );
}
