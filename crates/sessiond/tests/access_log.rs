//! What the real binary logs: the start-up summary (absolute data directory, engine,
//! capabilities, the defaults it chose), one access line per request with the route template
//! and request id, the client behind a trusted proxy, and a 401's reason without the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

#[path = "common/binary.rs"]
mod binary;
use binary::Binary;

const KEY: &str = "access-log-test-key-0123456789";
const WRONG: &str = "wrong-key-that-must-never-be-logged";

fn access(event: &Value) -> bool {
    event["target"] == "sessiond::access"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_summary_access_lines_and_refusal_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::spawn(
        dir.path(),
        &[
            ("SESSIOND_API_KEYS", KEY.to_string()),
            (
                "SESSIOND_HTTP__TRUSTED_PROXIES",
                "[\"127.0.0.1/32\"]".to_string(),
            ),
        ],
    );
    let logs = server.logs.clone();

    // Start-up: where, what, and the defaults chosen.
    let listening = logs.wait_for("sessiond listening", |e| {
        e["fields"]["message"] == "sessiond listening"
    });
    let fields = &listening["fields"];
    assert_eq!(fields["engine"], "sqlite");
    assert_eq!(
        fields["data_dir"].as_str().unwrap(),
        dir.path().to_str().unwrap(),
        "data_dir is absolute"
    );
    for capability in ["sessions", "streams", "middleware", "realtime"] {
        assert!(
            fields["capabilities"]
                .as_str()
                .unwrap()
                .split(',')
                .any(|c| c == capability),
            "{fields}"
        );
    }
    assert_eq!(fields["auth"], "1 API key(s)");
    logs.wait_for("the random signing key warning", |e| {
        e["level"] == "WARN"
            && e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("signing_keys is empty"))
    });

    let http = reqwest::Client::new();
    // A wrong key: 401, its reason logged, the key nowhere.
    let res = http
        .get(server.url("/v1/sessions/abc"))
        .bearer_auth(WRONG)
        .header("x-request-id", "req-401-test")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["x-request-id"], "req-401-test");
    let refused = logs.wait_for("the 401 line", |e| {
        access(e) && e["fields"]["request_id"] == "req-401-test"
    });
    let f = &refused["fields"];
    assert_eq!(f["status"], 401);
    assert_eq!(f["method"], "GET");
    assert_eq!(f["route"], "/v1/sessions/{id}");
    assert_eq!(f["error"], "invalid API key");
    assert!(f["duration_ms"].as_f64().is_some());

    // A good request through a trusted proxy: a generated id, the forwarded client.
    let res = http
        .post(server.url("/v1/sessions"))
        .bearer_auth(KEY)
        .header("x-forwarded-for", "203.0.113.7")
        .json(&serde_json::json!({"user_id": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 24, "a generated id: {id}");
    let line = logs.wait_for("the 201 line", |e| {
        access(e) && e["fields"]["request_id"] == id.as_str()
    });
    let f = &line["fields"];
    assert_eq!(f["status"], 201);
    assert_eq!(f["route"], "/v1/sessions");
    assert_eq!(f["client"], "203.0.113.7");
    assert!(f["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(f["bytes"].as_u64().unwrap() > 0);
    assert!(f.get("error").is_none());

    // Unknown paths are logged without their raw path.
    let res = http
        .get(server.url("/no/such/secret-path"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    logs.wait_for("the 404 line", |e| {
        access(e) && e["fields"]["status"] == 404 && e["fields"]["route"] == "unmatched"
    });
    server.stop_checked(|lines| {
        for line in lines {
            assert!(!line.contains(WRONG), "credential logged: {line}");
            assert!(!line.contains(KEY), "credential logged: {line}");
            assert!(!line.contains("secret-path"), "raw path logged: {line}");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_access_log_off_only_refusals_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::spawn(
        dir.path(),
        &[
            ("SESSIOND_API_KEYS", KEY.to_string()),
            ("SESSIOND_LOG__ACCESS", "false".to_string()),
        ],
    );
    let http = reqwest::Client::new();
    let ok = http
        .get(server.url("/healthz"))
        .header("x-request-id", "quiet")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-request-id"], "quiet");
    let res = http
        .delete(server.url("/v1/sessions/abc"))
        .header("x-request-id", "loud")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let refused = server.logs.wait_for("the 401 line", |e| {
        access(e) && e["fields"]["request_id"] == "loud"
    });
    assert!(refused["fields"]["error"]
        .as_str()
        .unwrap()
        .contains("Bearer"));
    // The 401 was logged after the 200 was answered: a line for the 200 would be there.
    assert!(!server
        .logs
        .events()
        .iter()
        .any(|e| access(e) && e["fields"]["request_id"] == "quiet"));
    server.stop();
}

/// Access lines are written together (`log.access_flush_ms`): with a long interval a line is
/// held, and a clean stop writes it before its last line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_access_lines_are_written_by_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::spawn(
        dir.path(),
        &[
            ("SESSIOND_API_KEYS", KEY.to_string()),
            ("SESSIOND_LOG__ACCESS_FLUSH_MS", "10000".to_string()),
        ],
    );
    let ok = reqwest::Client::new()
        .get(server.url("/healthz"))
        .header("x-request-id", "held")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let held = |e: &Value| access(e) && e["fields"]["request_id"] == "held";
    assert!(
        !server.logs.events().iter().any(held),
        "the line waits for the flush"
    );
    server.stop_checked(|lines| {
        let events: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let line = events.iter().position(held).expect("the held line");
        let last = events
            .iter()
            .position(|e| e["fields"]["message"] == "sessiond stopped cleanly")
            .unwrap();
        assert!(line < last, "written before the last line");
    });
}

/// sessiond writes the access line itself, but the log filter still decides: a directive that
/// puts `sessiond::access` above `info` drops every line (a 401's too), one that names it
/// keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filter_decides_over_access_lines() {
    for (filter, logged) in [
        ("warn,sessiond=info,sessiond::access=warn", false),
        ("warn,sessiond::startup=info,sessiond::access=info", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = Binary::spawn(
            dir.path(),
            &[
                ("SESSIOND_API_KEYS", KEY.to_string()),
                ("RUST_LOG", filter.to_string()),
            ],
        );
        let res = reqwest::Client::new()
            .get(server.url("/v1/sessions/abc"))
            .header("x-request-id", "filtered")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["x-request-id"], "filtered");
        if logged {
            let line = server.logs.wait_for("the 401 line", |e| {
                access(e) && e["fields"]["request_id"] == "filtered"
            });
            assert_eq!(line["fields"]["status"], 401, "{filter}");
            server.stop();
        } else {
            // The clean-stop line comes after the request: every earlier line is in by then.
            server.stop_checked(|lines| {
                let access_lines: Vec<_> = lines
                    .iter()
                    .filter(|l| l.contains("sessiond::access"))
                    .collect();
                assert!(access_lines.is_empty(), "{filter}: {access_lines:?}");
            });
        }
    }
}
