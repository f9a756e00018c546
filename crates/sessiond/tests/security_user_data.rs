//! The security events' user-data source (export and erasure, issue 19 §5/§6), called
//! directly through the server's wiring (`sessiond::security::wire`) on a real SQLite engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::{json, Value};
use sessiond::config::Config;
use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_http::user_data::UserDataSource;
use sessiond_runtime::ObjectKind;
use sessiond_sessions::service::NewSession;
use sessiond_sessions::{SessionService, SessionsConfig};
use sessiond_store::{Durability, Stores};
use sessiond_streams::{NoCold, Streams, StreamsConfig};

async fn global(streams: &Streams) -> Vec<Value> {
    let res = sessiond_streams::read::read(
        streams,
        "__security/all",
        &HeaderMap::new(),
        Some("offset=-1"),
    )
    .await
    .unwrap();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_erasure_of_security_events() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    let stores = Stores::from_engine(engine.clone()).with_streams(engine.clone());
    let streams = Streams::new(
        engine.clone(),
        Arc::new(NoCold),
        ObjectKind::in_memory("stream"),
        StreamsConfig::default(),
        true,
    );
    let wired = sessiond::security::wire(&Config::default(), &stores, streams.clone());
    let sessions = SessionService::new(
        stores.sessions.clone(),
        Arc::new(SessionsConfig::default()),
        ObjectKind::in_memory("session"),
        ObjectKind::in_memory("user"),
        true,
    )
    .with_security(wired.events.clone());
    let source = &wired.user_data;
    assert_eq!(source.name(), "security_events");

    let login = |user: &str| NewSession {
        user_id: Some(user.into()),
        device: Some(json!({"ip": "203.0.113.9", "user_agent": "curl/8"})),
        ..NewSession::default()
    };
    let ada = sessions
        .create(login("ada"), Durability::Confirmed)
        .await
        .unwrap();
    sessions
        .delete(&ada.id, None, Durability::Confirmed)
        .await
        .unwrap();
    sessions
        .create(login("bob"), Durability::Confirmed)
        .await
        .unwrap();

    // Export: the user's events (queued ones relayed first), nobody else's.
    let exported = source.export("ada").await.unwrap();
    let kinds: Vec<&str> = exported
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["session.created", "session.revoked"], "{exported}");
    assert!(exported
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["user_id"] == "ada"));
    assert_eq!(source.export("nobody").await.unwrap(), json!([]));
    let before = global(&streams).await;
    let ada_ref = before
        .iter()
        .find(|e| e["session_id"] == ada.id.as_str())
        .map(|e| e["user_ref"].clone())
        .unwrap();

    // Erasure: the stream goes, the global stream says so without naming anyone.
    source.erase("ada").await.unwrap();
    assert_eq!(
        source.export("ada").await.unwrap(),
        json!([]),
        "user stream deleted"
    );
    wired.relay.flush().await.unwrap();
    let after = global(&streams).await;
    let erased: Vec<&Value> = after
        .iter()
        .filter(|e| e["type"] == "user.erased")
        .collect();
    assert_eq!(erased.len(), 1, "{after:?}");
    assert!(erased[0]["erasure_id"]
        .as_str()
        .is_some_and(|id| id.len() >= 22));
    assert!(erased[0]["user_ref"].is_null() && erased[0].get("user_id").is_none());
    assert!(!serde_json::to_string(&after).unwrap().contains("\"ada\""));
    // The secret went with it: the same user id gets an unrelated reference from now on.
    let again = sessions
        .create_signalled(login("ada"), Durability::Confirmed)
        .await
        .unwrap();
    // Known devices went too: the same device is new again.
    assert_eq!(again.new_device, Some(true));
    let again = again.record;
    wired.relay.flush().await.unwrap();
    let new_ref = global(&streams)
        .await
        .iter()
        .find(|e| e["session_id"] == again.id.as_str())
        .map(|e| e["user_ref"].clone())
        .unwrap();
    assert_ne!(new_ref, ada_ref, "the old user_ref points at nobody");
    let created = sessions
        .create_signalled(login("ada"), Durability::Confirmed)
        .await
        .unwrap();
    assert_eq!(created.new_device, Some(false), "seen again since");
    // Erasing an unknown user succeeds.
    source.erase("nobody").await.unwrap();
}
