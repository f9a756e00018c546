//! The OpenAPI document (`docs/openapi.json`, served at `GET /v1/openapi.json`) against the
//! route table of the security matrix (`security_routes`), which itself is held to every
//! `.route(` registration in the source: so a route added without its OpenAPI operation, or an
//! operation left behind after its route went away, fails here.
//!
//! How to add a route: register it, add its entry (auth class and calls) to
//! `tests/security_routes/mod.rs`, then add its path and method to `docs/openapi.json` with
//! its parameters, request body, answers (the 4xx ones as `#/components/responses/...`) and
//! `security`; `./scripts/test`'s schemathesis run (`scripts/fuzz-api/run`) then fuzzes it.
//!
//! The admin console (`/admin`, HTML and assets) is not part of the document: its actions go
//! through the documented `/v1` APIs.
//!
//! Matching: a call's concrete path (query dropped) is matched against every documented path
//! template; `{name}` stands for one segment, and a trailing `{path}` or `{rest}` for one or
//! more (the router's `{*path}` wildcard). The template with the most literal segments wins,
//! as in the router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod security_routes;

use std::collections::BTreeSet;

use common::TestServer;
use security_routes::{ROUTES, SERVER_OWNED_CALLS};
use serde_json::Value;
use sessiond::config::EngineKind;

const DOC: &str = include_str!("../../../docs/openapi.json");

fn doc() -> Value {
    serde_json::from_str(DOC).expect("docs/openapi.json is JSON")
}

/// Literal segments of `template` when it matches `path`, else `None`.
fn matches(template: &str, path: &str) -> Option<usize> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    let mut literal = 0;
    for (i, seg) in t.iter().enumerate() {
        let param = seg.starts_with('{') && seg.ends_with('}');
        let last = i + 1 == t.len();
        if param && last && (*seg == "{path}" || *seg == "{rest}") {
            let rest = p.get(i..)?;
            return (!rest.is_empty() && rest.iter().all(|s| !s.is_empty())).then_some(literal);
        }
        let got = p.get(i)?;
        if param {
            if got.is_empty() {
                return None;
            }
        } else if seg != got {
            return None;
        } else {
            literal += 1;
        }
    }
    (t.len() == p.len()).then_some(literal)
}

/// The documented template a concrete path is served by (most literal segments wins).
fn template_of<'a>(templates: &'a [String], path: &str) -> Option<&'a str> {
    templates
        .iter()
        .filter_map(|t| matches(t, path).map(|n| (n, t.as_str())))
        .max_by_key(|(n, _)| *n)
        .map(|(_, t)| t)
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

#[test]
fn every_route_has_an_operation_and_every_operation_a_route() {
    let doc = doc();
    let paths = doc["paths"].as_object().expect("paths");
    let templates: Vec<String> = paths.keys().cloned().collect();
    let mut covered = BTreeSet::new();
    let mut missing = Vec::new();
    let calls = ROUTES
        .iter()
        .flat_map(|r| r.calls.iter())
        .chain(SERVER_OWNED_CALLS.iter());
    for &(method, path, _) in calls {
        let path = path.split('?').next().unwrap();
        // The admin console's pages are a web page, not an API (its actions call `/v1`).
        if path == "/admin" || path.starts_with("/admin/") {
            continue;
        }
        let method = method.to_ascii_lowercase();
        match template_of(&templates, path) {
            Some(t) if paths[t].get(&method).is_some() => {
                covered.insert((method, t.to_string()));
            }
            found => missing.push(format!("{method} {path} (template {found:?})")),
        }
    }
    assert!(
        missing.is_empty(),
        "routes without an operation in docs/openapi.json: {missing:#?}"
    );
    let mut stale = Vec::new();
    for (template, item) in paths {
        for method in METHODS {
            let key = (method.to_string(), template.clone());
            if item.get(method).is_some() && !covered.contains(&key) {
                stale.push(format!("{method} {template}"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "operations in docs/openapi.json without a route in tests/security_routes: {stale:#?}"
    );
}

/// Every `$ref` points at something that exists.
fn check_refs(doc: &Value, node: &Value, broken: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let pointer = r.strip_prefix('#').unwrap_or("?");
                if doc.pointer(pointer).is_none() {
                    broken.push(r.clone());
                }
            }
            map.values().for_each(|v| check_refs(doc, v, broken));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v, broken)),
        _ => {}
    }
}

#[test]
fn the_document_is_whole() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut broken = Vec::new();
    check_refs(&doc, &doc, &mut broken);
    assert!(broken.is_empty(), "unresolved $refs: {broken:?}");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for name in [
        "apiKey",
        "tenantKey",
        "readToken",
        "sessionToken",
        "wakeToken",
    ] {
        assert!(schemes.contains_key(name), "security scheme {name}");
    }
    let mut ids = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_string()),
                "{method} {template}: operationId {id:?}"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {template}: no responses");
            for (scheme, _) in op["security"]
                .as_array()
                .unwrap_or(&Vec::new())
                .iter()
                .flat_map(|s| s.as_object().unwrap().iter())
            {
                assert!(
                    schemes.contains_key(scheme),
                    "{method} {template}: {scheme}"
                );
            }
            // A keyed route documents the JSON error of a refused credential.
            let public = op["security"].as_array().is_some_and(|s| s.is_empty());
            if !public {
                assert!(responses.contains_key("401"), "{method} {template}: no 401");
            }
        }
    }
}

#[tokio::test]
async fn served_without_a_key_as_json() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.api_keys = vec!["openapi-test-key-0123456789".into()];
    })
    .await;
    let res = s.get("/v1/openapi.json").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let served: Value = res.json().await.unwrap();
    assert_eq!(served, doc());
    // A key is not needed, and a wrong one is not looked at either.
    let res = s
        .get("/v1/openapi.json")
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    s.stop().await;
}

#[test]
fn templates_match_like_the_router() {
    let t: Vec<String> = [
        "/v1/stream/{path}",
        "/v1/stream/__ds/{rest}",
        "/v1/stream/__ds/jwks.json",
        "/v1/sessions/{id}",
        "/v1/sessions/forward-auth",
        "/compat/state/events/",
        "/compat/state/events/{rest}",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        template_of(&t, "/v1/stream/a/b/c"),
        Some("/v1/stream/{path}")
    );
    assert_eq!(
        template_of(&t, "/v1/stream/__ds/x"),
        Some("/v1/stream/__ds/{rest}")
    );
    assert_eq!(
        template_of(&t, "/v1/stream/__ds/jwks.json"),
        Some("/v1/stream/__ds/jwks.json")
    );
    assert_eq!(
        template_of(&t, "/v1/sessions/abc"),
        Some("/v1/sessions/{id}")
    );
    assert_eq!(
        template_of(&t, "/v1/sessions/forward-auth"),
        Some("/v1/sessions/forward-auth")
    );
    assert_eq!(template_of(&t, "/v1/sessions/a/b"), None);
    assert_eq!(
        template_of(&t, "/compat/state/events/"),
        Some("/compat/state/events/")
    );
    assert_eq!(
        template_of(&t, "/compat/state/events/c1/x"),
        Some("/compat/state/events/{rest}")
    );
    assert_eq!(template_of(&t, "/v1/stream/"), None);
}
