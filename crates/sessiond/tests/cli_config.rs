//! The command line as a user meets it: `--listen` with a host name, configuration errors
//! that name the file and the key, and `--help` showing the defaults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;
use sessiond::config::{Config, EngineKind};

fn sessiond() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond"));
    command
        .env_remove("SESSIOND_API_KEYS")
        .env_remove("RUST_LOG")
        .env_remove("SESSIOND_LISTEN");
    command
}

#[test]
fn listen_accepts_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = sessiond()
        .args(["serve", "--engine", "memory", "--listen", "localhost:0"])
        .env("SESSIOND_LOG__FORMAT", "json")
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("sessiond exited before listening")
            .unwrap();
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if event["fields"]["message"] == "sessiond listening" {
            break event["fields"]["addr"].as_str().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    assert!(
        addr.starts_with("127.0.0.1:"),
        "localhost is 127.0.0.1: {addr}"
    );
    let health = std::net::TcpStream::connect(&addr).map(|_| ());
    let _ = child.kill();
    let _ = child.wait();
    health.expect("listening on the resolved address");
}

fn check_config(file: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.toml");
    std::fs::write(&path, file).unwrap();
    let out = sessiond()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{file:?} was accepted");
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(!text.contains("``"), "no doubled backticks: {text}");
    assert!(!text.contains("default."), "no profile prefix: {text}");
    text
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let text = check_config("lisen = \"127.0.0.1:7700\"\n");
    assert!(text.contains("unknown key `lisen`"), "{text}");
    assert!(text.contains("listen, data_dir"), "lists the keys: {text}");

    let text = check_config("[log]\nlevle = \"debug\"\n");
    assert!(text.contains("unknown key `log.levle`"), "{text}");
    assert!(text.contains("[log]"), "{text}");

    let text = check_config("engine = \"mysql\"\n");
    assert!(text.contains("key `engine`"), "{text}");
    assert!(text.contains("sqlite, redis, memory"), "{text}");

    let text = check_config("[sessions]\nidle_ttl_s = \"long\"\n");
    assert!(text.contains("key `sessions.idle_ttl_s`"), "{text}");

    let text = check_config("listen = \"7700\"\n");
    assert!(
        text.contains("key `listen`") && text.contains("host:port"),
        "{text}"
    );

    // A cross-field check names its key, and the file too.
    let text = check_config("api_keys = [\"short\"]\n");
    assert!(text.contains("api_keys"), "{text}");
    let text = check_config("[redis]\nsession_expiry_grace_s = 999999999999\n");
    assert!(text.contains("redis.session_expiry_grace_s"), "{text}");
    let text = check_config("[log]\naccess_flush_ms = 60000\n");
    assert!(text.contains("log.access_flush_ms"), "{text}");
}

#[test]
fn help_shows_the_defaults() {
    let out = sessiond().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let defaults = Config::default();
    assert_eq!(defaults.engine, EngineKind::Sqlite);
    for expected in [
        format!("[default: {}]", defaults.data_dir.display()),
        "[default: sqlite]".to_owned(),
        format!("[default: {}]", defaults.listen),
    ] {
        assert!(help.contains(&expected), "`{expected}` in:\n{help}");
    }
}
