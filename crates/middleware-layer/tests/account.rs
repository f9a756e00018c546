//! [`AccountLayer`] through a real listener, remote (a real sessiond on SQLite) and in-process
//! (a `SessionService` on the embedded SQLite engine): a live account session reaches the
//! handler with its user in the extensions; no, unknown, open-route or revoked sessions are
//! 401 (a revoke on the very next request); an old login is 401 with the challenge until a
//! reauth; and when the backend is gone the request is denied (503), never passed through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../sessiond/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use common::TestServer;
use serde_json::{json, Value};
use sessiond::config::{EngineKind, RouteSet};
use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_layer::{AccountLayer, AccountSession, RemoteAccounts};
use sessiond_runtime::{Runtime, RuntimeConfig};
use sessiond_sessions::service::NewSession;
use sessiond_sessions::{SessionService, SessionsConfig};
use sessiond_store::{Durability, SessionOrigin, Stores};

const API_KEY: &str = "account-layer-test-key";

/// The app behind the layer: answers the verified user id.
async fn serve(layer: AccountLayer) -> String {
    let whoami = |Extension(account): Extension<AccountSession>| async move {
        format!("{} {}", account.user_id, account.session_id)
    };
    let app = Router::new().route("/", get(whoami)).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn visit(app: &str, session: Option<&str>) -> (u16, String, Option<String>) {
    let mut req = reqwest::Client::new().get(app);
    if let Some(id) = session {
        req = req.header("cookie", format!("a=b; sessiond_session={id}"));
    }
    let res = req.send().await.unwrap();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (res.status().as_u16(), res.text().await.unwrap(), challenge)
}

/// Polls until the login is older than the layer's one-second max age.
async fn until_too_old(app: &str, id: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body, challenge) = visit(app, Some(id)).await;
        if status == 401 {
            return challenge.expect("the challenge");
        }
        assert_eq!(status, 200, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "never too old");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const CHALLENGE: &str = "Bearer error=\"insufficient_user_authentication\", max_age=1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_account_check() {
    let server = TestServer::start(EngineKind::Sqlite, |c| {
        c.api_keys = vec![API_KEY.into()];
        c.open_routes = vec![RouteSet::Sessions];
    })
    .await;
    let create = |keyed: bool| {
        let mut req = server.post("/v1/sessions").json(&json!({"user_id": "ada"}));
        if keyed {
            req = req.bearer_auth(API_KEY);
        }
        async move {
            let body: Value = req.send().await.unwrap().json().await.unwrap();
            body["id"].as_str().unwrap().to_string()
        }
    };
    let app = serve(AccountLayer::remote(&server.url(""), API_KEY)).await;
    let id = create(true).await;
    assert_eq!(visit(&app, Some(&id)).await.1, format!("ada {id}"));
    assert_eq!(visit(&app, None).await.0, 401);
    assert_eq!(visit(&app, Some("unknown")).await.0, 401);
    assert_eq!(
        visit(&app, Some(&create(false).await)).await.0,
        401,
        "open route"
    );
    let wrong_key = serve(AccountLayer::remote(&server.url(""), "not-the-key")).await;
    assert_eq!(
        visit(&wrong_key, Some(&id)).await.0,
        401,
        "a wrong key denies"
    );

    let fresh = serve(AccountLayer::remote(&server.url(""), API_KEY).max_age(1)).await;
    assert_eq!(until_too_old(&fresh, &id).await, CHALLENGE);
    let res = server
        .post(&format!("/v1/sessions/{id}/reauth"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(visit(&fresh, Some(&id)).await.0, 200, "after reauth");

    let res = server
        .delete(&format!("/v1/sessions/{id}"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        visit(&app, Some(&id)).await.0,
        401,
        "revoked: the next request"
    );

    let id = create(true).await;
    let short = serve(AccountLayer::remote_with(
        RemoteAccounts::new(&server.url(""), API_KEY).timeout(Duration::from_secs(1)),
    ))
    .await;
    assert_eq!(visit(&short, Some(&id)).await.0, 200);
    server.stop().await;
    assert_eq!(
        visit(&short, Some(&id)).await.0,
        503,
        "sessiond gone: denied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_account_check() {
    let dir = tempfile::tempdir().unwrap();
    let stores =
        Stores::from_engine(SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap());
    let mut builder = Runtime::builder(stores.objects.clone(), RuntimeConfig::default());
    let sessions = SessionService::new(
        stores.sessions.clone(),
        Arc::new(SessionsConfig::default()),
        builder.kind("session"),
        builder.kind("user"),
        stores.admin.exclusive(),
    );
    let runtime = builder.start();
    let create = |origin: SessionOrigin| {
        let sessions = sessions.clone();
        async move {
            let new = NewSession {
                user_id: Some("ada".into()),
                origin,
                ..NewSession::default()
            };
            sessions
                .create(new, Durability::Confirmed)
                .await
                .unwrap()
                .id
        }
    };
    let app = serve(AccountLayer::in_process(sessions.clone())).await;
    let id = create(SessionOrigin::Service).await;
    assert_eq!(visit(&app, Some(&id)).await.1, format!("ada {id}"));
    assert_eq!(visit(&app, None).await.0, 401);
    let open = create(SessionOrigin::OpenRoute).await;
    assert_eq!(visit(&app, Some(&open)).await.0, 401, "open route");

    let fresh = serve(AccountLayer::in_process(sessions.clone()).max_age(1)).await;
    assert_eq!(until_too_old(&fresh, &id).await, CHALLENGE);
    sessions
        .reauth(&id, None, Durability::Confirmed)
        .await
        .unwrap();
    assert_eq!(visit(&fresh, Some(&id)).await.0, 200, "after reauth");

    assert!(sessions
        .delete(&id, None, Durability::Confirmed)
        .await
        .unwrap());
    assert_eq!(
        visit(&app, Some(&id)).await.0,
        401,
        "revoked: the next request"
    );

    let id = create(SessionOrigin::Service).await;
    stores.admin.close().await.unwrap();
    let (status, body, _) = visit(&app, Some(&id)).await;
    assert!(
        status == 503 || status == 401,
        "engine closed: denied, {status} {body}"
    );
    assert_ne!(status, 200);
    runtime.shutdown().await;
}
