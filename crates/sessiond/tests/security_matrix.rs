//! Route × credential matrix, in open and keyed mode, through a real server.
//!
//! The routes come from the routers' own source: every `.route(` registration in the
//! capabilities' (non-test) code must appear in [`ROUTES`] with an auth class, so a route
//! added later without an auth decision fails [`every_route_has_an_auth_decision`]; every
//! entry is then called with each credential and must be refused (401/403) or let through
//! exactly as its class says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod security_routes;

use std::path::{Path, PathBuf};

use common::TestServer;
use security_routes::{Class, Route, ROUTES, SERVER_OWNED_CALLS};
use serde_json::{json, Value};
use sessiond::config::{Config, EngineKind};
use sessiond_streams::ScopedKeyConfig;
use Class::*;

const FULL: &str = "full-key-0123456789abcdef";
const TENANT: &str = "tenant-a-key-0123456789";
const SECRET: &str = "read-token-secret-0123456789abcdef";
const SIGNING: &str = "middleware-signing-key-0123456789abcdef";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `(file, first argument)` of a `.route(` call in non-test source of every crate.
fn registered_routes() -> Vec<(String, String)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let relative = file
            .strip_prefix(&crates)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        for piece in code.split(".route(").skip(1) {
            // The first argument: up to the first comma outside parentheses.
            let mut depth = 0i32;
            let mut arg = String::new();
            for c in piece.chars() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => break,
                    ')' => depth -= 1,
                    ',' if depth == 0 => break,
                    _ => {}
                }
                arg.push(c);
            }
            found.push((relative.clone(), arg.split_whitespace().collect::<String>()));
        }
    }
    found
}

#[test]
fn every_route_has_an_auth_decision() {
    let registered = registered_routes();
    let missing: Vec<_> = registered
        .iter()
        .filter(|(file, arg)| {
            !ROUTES.iter().any(|r| {
                file.ends_with(r.file) && *arg == r.arg.split_whitespace().collect::<String>()
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an entry (auth class + calls) in the security matrix: {missing:?}"
    );
    for route in ROUTES {
        let arg = route.arg.split_whitespace().collect::<String>();
        assert!(
            registered
                .iter()
                .any(|(f, a)| f.ends_with(route.file) && *a == arg),
            "matrix entry {} {} names no registered route",
            route.file,
            route.arg
        );
    }
}

/// The credentials of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credential {
    None,
    TenantKey,
    SessionToken,
    MiddlewareCookie,
    ServiceKey,
}

const CREDENTIALS: [Credential; 5] = [
    Credential::None,
    Credential::TenantKey,
    Credential::SessionToken,
    Credential::MiddlewareCookie,
    Credential::ServiceKey,
];

/// Whether `credential` passes authentication on `class` for `method` (`open`: open mode).
fn expected(class: Class, credential: Credential, method: &str, open: bool) -> bool {
    use Credential as C;
    let read = method == "GET" || method == "HEAD";
    match (class, open) {
        (Public, _) => true,
        (WakeToken, _) => false,
        (ServerOwned, true) => false,
        (ServerOwned, false) => credential == C::ServiceKey && read,
        (Service | Edge | Stream, true) => true,
        (Service | Edge, false) => credential == C::ServiceKey,
        (Stream, false) => matches!(credential, C::ServiceKey | C::TenantKey),
        // Open mode has no keys: a bearer that is not a session token is refused, a user's
        // session is not a service; no credential (cookies are not read here) is.
        (RealtimeService, true) => matches!(credential, C::None | C::MiddlewareCookie),
        (RealtimeService, false) => credential == C::ServiceKey,
        (Socket, true) => matches!(credential, C::SessionToken | C::MiddlewareCookie),
        (Socket, false) => matches!(
            credential,
            C::SessionToken | C::MiddlewareCookie | C::ServiceKey
        ),
    }
}

fn configure(c: &mut Config, open: bool) {
    c.middleware.signing_keys = vec![SIGNING.into()];
    c.admin.enabled = true;
    if !open {
        c.api_keys = vec![FULL.into()];
        c.streams.keys = vec![ScopedKeyConfig {
            key: TENANT.into(),
            stream_prefixes: vec!["tenant-a".into()],
            read_only: false,
        }];
        c.streams.read_token_secrets = vec![SECRET.into()];
    }
}

async fn post_json(s: &TestServer, path: &str, body: Value) -> Value {
    let res = s
        .post(path)
        .bearer_auth(FULL)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap()
}

async fn run_matrix(open: bool) {
    let s = TestServer::start(EngineKind::Memory, |c| configure(c, open)).await;
    let decided = post_json(
        &s,
        "/v1/middleware/decide",
        json!({"ip": "192.0.2.7", "url": "https://app.example/", "method": "GET"}),
    )
    .await;
    let cookie = decided["set_cookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let mut failures = Vec::new();
    let server_owned = Route {
        file: "",
        arg: "",
        class: ServerOwned,
        calls: SERVER_OWNED_CALLS,
    };
    for route in ROUTES.iter().chain([&server_owned]) {
        // A fresh session per route: some routes revoke or clear sessions.
        let token = post_json(&s, "/v1/sessions", json!({"user_id": "alice"})).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        for &(method, path, body) in route.calls {
            for credential in CREDENTIALS {
                let mut request = s.http.request(method.parse().unwrap(), s.url(path));
                request = match credential {
                    Credential::None => request,
                    // In open mode no key exists: these are just unknown bearers.
                    Credential::TenantKey => request.bearer_auth(TENANT),
                    Credential::ServiceKey => request.bearer_auth(FULL),
                    Credential::SessionToken => request.bearer_auth(&token),
                    Credential::MiddlewareCookie => request.header("cookie", &cookie),
                };
                if let Some(body) = body {
                    let media = if method == "PATCH" && path.starts_with("/v1/") {
                        "application/merge-patch+json"
                    } else {
                        "application/json"
                    };
                    request = request.header("content-type", media).body(body);
                }
                let res = request.send().await.unwrap();
                let status = res.status().as_u16();
                let text = res.text().await.unwrap_or_default();
                let passed = match route.class {
                    WakeToken => (200..300).contains(&status),
                    // Past the key guard, the check's own 401: no session cookie was sent.
                    Edge => {
                        (status != 401 && status != 403) || text.contains("no live account session")
                    }
                    _ => status != 401 && status != 403,
                };
                let want = expected(route.class, credential, method, open);
                if passed != want || status >= 500 || text.contains("no such route") {
                    failures.push(format!(
                        "{method} {path} with {credential:?} ({:?}): {status} {text}",
                        route.class
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mode:\n{}",
        if open { "open" } else { "keyed" },
        failures.join("\n")
    );
}

#[tokio::test]
async fn route_credential_matrix_in_keyed_mode() {
    run_matrix(false).await;
}

#[tokio::test]
async fn route_credential_matrix_in_open_mode() {
    run_matrix(true).await;
}
