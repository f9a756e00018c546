//! The layer in remote mode, against a real sessiond (SQLite engine) on a loopback port: the
//! first visit and the return, the API key, the server going away, and the rate refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../sessiond/tests/common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use common::TestServer;
use sessiond::config::{Config, EngineKind};
use sessiond_layer::{RemoteBackend, SessionLayer};
use support::{
    assert_fallback, assert_refused, first_visit_then_return, serve_app, visit_until_refused,
    Browser, SIGNING_KEY,
};

const API_KEY: &str = "layer-tests-api-key";

async fn sessiond(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![API_KEY.into()];
        c.middleware.signing_keys = vec![SIGNING_KEY.into()];
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn first_visit_sets_cookies_and_the_return_keeps_client_and_session() {
    let server = sessiond(|_| {}).await;
    let app = serve_app(SessionLayer::remote(&server.url(""), API_KEY)).await;
    first_visit_then_return(&app).await;
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_api_key_falls_back_and_the_request_passes() {
    let server = sessiond(|_| {}).await;
    let app = serve_app(SessionLayer::remote(&server.url(""), "not-the-key")).await;
    assert_fallback(&Browser::default().visit(&app, &[]).await);
    server.stop().await;
}

#[tokio::test]
async fn the_server_going_away_falls_back_and_the_request_passes() {
    let server = sessiond(|_| {}).await;
    let base = server.url("");
    let app = serve_app(SessionLayer::with_backend(
        RemoteBackend::new(&base, API_KEY).timeout(Duration::from_secs(2)),
    ))
    .await;
    let mut browser = first_visit_then_return(&app).await;
    server.stop().await;
    // Nothing listens on the port any more: the visit is a fallback, the cookies stay as
    // they were (no Set-Cookie), and the app still answers.
    assert_fallback(&browser.visit(&app, &[]).await);
}

#[tokio::test]
async fn an_unusable_url_falls_back() {
    let app = serve_app(SessionLayer::remote("not a url", API_KEY)).await;
    assert_fallback(&Browser::default().visit(&app, &[]).await);
}

#[tokio::test]
async fn a_client_over_its_decision_rate_gets_429() {
    let server = sessiond(|c| c.middleware.limits.max_decisions_per_client_per_s = 2).await;
    let app = serve_app(SessionLayer::remote(&server.url(""), API_KEY)).await;
    let mut browser = Browser::default();
    assert_eq!(browser.visit(&app, &[]).await.status, 200);
    assert_refused(&visit_until_refused(&mut browser, &app, 20).await);
    server.stop().await;
}
