//! A failing background task stops a running server: through the real listener, the real
//! engine (SQLite in a temp dir) and the real shutdown path, with the task added the way an
//! embedding application adds its own ([`Server::add_task`]).

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::*;
use crate::config::EngineKind;
use crate::supervisor::TaskFailure;

async fn wait_healthy(http: &reqwest::Client, url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = http.get(url).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_background_task_stops_the_server_with_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        engine: EngineKind::Sqlite,
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.validate().expect("valid configuration");
    let mut server = Server::wire(config).await.expect("wired");
    let (fail, failing) = oneshot::channel::<()>();
    server.add_task(Task::new("doomed-task", async move {
        if failing.await.is_ok() {
            panic!("its store went away");
        }
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    // The shutdown signal never comes: only the failure can stop the server.
    let (_signal, never) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = never.await;
    }));
    let http = reqwest::Client::new();
    wait_healthy(&http, &format!("http://{addr}/healthz")).await;

    fail.send(()).expect("the task is waiting");
    let result = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server kept running after its task panicked")
        .expect("serve panicked");
    let error = result.expect_err("the server stopped as if cleanly");
    assert_eq!(
        error.downcast_ref::<TaskFailure>(),
        Some(&TaskFailure {
            task: "doomed-task",
            panicked: true,
            reason: "its store went away".to_string(),
        }),
        "{error:#}"
    );
    assert_eq!(
        error.to_string(),
        "background task `doomed-task` panicked: its store went away"
    );
    // It stopped serving (the listener is closed), in the usual order: the engine was
    // closed, so the data directory opens again.
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    let again = Config {
        engine: EngineKind::Sqlite,
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    Server::wire(again).await.expect("reopened after the stop");
}
