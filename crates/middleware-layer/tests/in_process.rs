//! The layer in-process, on the embedded SQLite engine in a temp dir: the first visit and the
//! return, the state surviving a restart, the client IP from a proxy header, the rate refusal
//! and the fallback when the engine is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use axum::http::HeaderName;
use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_layer::{Embedded, MiddlewareConfig};
use sessiond_middleware::AnalyticsTarget;
use sessiond_store::Stores;
use support::{
    assert_fallback, assert_refused, first_visit_then_return, serve_app, visit_until_refused,
    Browser, SIGNING_KEY,
};

fn config() -> MiddlewareConfig {
    let mut config = MiddlewareConfig {
        signing_keys: vec![SIGNING_KEY.into()],
        ..MiddlewareConfig::default()
    };
    config.analytics.sink = AnalyticsTarget::Off;
    config
}

fn open(dir: &Path) -> Stores {
    Stores::from_engine(SqliteEngine::open(dir, SqliteOptions::default()).unwrap())
}

#[tokio::test]
async fn first_visit_sets_cookies_and_the_return_keeps_client_and_session() {
    let dir = tempfile::tempdir().unwrap();
    let stores = open(dir.path());
    let embedded = Embedded::start(config(), &stores).unwrap();
    let app = serve_app(embedded.layer()).await;
    let mut browser = first_visit_then_return(&app).await;
    let before = browser.visit(&app, &[]).await.body;
    drop(app);
    embedded.shutdown().await;
    stores.admin.close().await.unwrap();

    // A restart on the same data dir: the client is still known, with its session.
    let stores = open(dir.path());
    let embedded = Embedded::start(config(), &stores).unwrap();
    let app = serve_app(embedded.layer()).await;
    let after = browser.visit(&app, &[]).await.body;
    assert_eq!(after["cID"], before["cID"], "{after}");
    assert_eq!(after["sID"], before["sID"]);
    assert_eq!(after["isNewClient"], false);
    assert_eq!(after["oldState"]["eID"], before["eID"]);
    drop(app);
    embedded.shutdown().await;
    stores.admin.close().await.unwrap();
}

#[tokio::test]
async fn the_client_ip_comes_from_the_configured_header() {
    let dir = tempfile::tempdir().unwrap();
    let stores = open(dir.path());
    let embedded = Embedded::start(config(), &stores).unwrap();
    let layer = embedded
        .layer()
        .client_ip_header(HeaderName::from_static("x-forwarded-for"));
    let app = serve_app(layer).await;
    let fp = |visit: support::Visit| visit.body["fpID"].as_str().unwrap().to_string();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let a1 = fp(Browser::default().visit(&app, &from("203.0.113.1")).await);
    let a2 = fp(Browser::default()
        .visit(&app, &from("198.51.100.7, 203.0.113.1"))
        .await);
    let b = fp(Browser::default().visit(&app, &from("203.0.113.2")).await);
    assert_eq!(a1, a2, "only the right-most entry counts");
    assert_ne!(a1, b, "another address, another fingerprint");
    drop(app);
    embedded.shutdown().await;
    stores.admin.close().await.unwrap();
}

#[tokio::test]
async fn a_client_over_its_decision_rate_gets_429() {
    let dir = tempfile::tempdir().unwrap();
    let stores = open(dir.path());
    let mut config = config();
    config.limits.max_decisions_per_client_per_s = 2;
    let embedded = Embedded::start(config, &stores).unwrap();
    let app = serve_app(embedded.layer()).await;
    let mut browser = Browser::default();
    assert_eq!(browser.visit(&app, &[]).await.status, 200);
    assert_refused(&visit_until_refused(&mut browser, &app, 20).await);
    drop(app);
    embedded.shutdown().await;
    stores.admin.close().await.unwrap();
}

#[tokio::test]
async fn a_closed_engine_falls_back_and_the_request_passes() {
    let dir = tempfile::tempdir().unwrap();
    let stores = open(dir.path());
    let embedded = Embedded::start(config(), &stores).unwrap();
    let app = serve_app(embedded.layer()).await;
    // A first visit stores nothing (it never needs the engine); its return does.
    let mut browser = Browser::default();
    assert_eq!(browser.visit(&app, &[]).await.status, 200);
    stores.admin.close().await.unwrap();
    let visit = browser.visit(&app, &[]).await;
    assert_fallback(&visit);
    assert!(
        visit.body["fpID"].is_string(),
        "in-process fallbacks keep the fingerprint"
    );
    drop(app);
    embedded.shutdown().await;
}
