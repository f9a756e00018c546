//! A dead server surfaces as `StoreError::Unavailable`, not as a panic or a hang.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sessiond_engine_redis::testing::RedisServer;
use sessiond_engine_redis::{RedisEngine, RedisOptions};
use sessiond_store::{now_ms, EngineAdmin, SessionStore, StoreError};

#[tokio::test]
async fn killed_server_reports_unavailable() {
    let mut server = RedisServer::start();
    let engine = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    engine.ping().await.unwrap();
    server.stop();
    let check = async {
        for _ in 0..3 {
            match engine.get_session("x", now_ms()).await {
                Err(StoreError::Unavailable(_)) => {}
                other => panic!("expected Unavailable, got {other:?}"),
            }
            assert!(matches!(
                engine.ping().await,
                Err(StoreError::Unavailable(_))
            ));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), check)
        .await
        .expect("calls do not hang");
}

#[tokio::test]
async fn connect_to_nothing_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("redis://127.0.0.1:{port}/");
    match RedisEngine::connect(&url, RedisOptions::default()).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
