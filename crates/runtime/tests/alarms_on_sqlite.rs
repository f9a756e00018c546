//! Alarms persist through a real engine: armed, engine closed, engine reopened from its files,
//! a new runtime fires them. (The memory-store tests cover the scheduler's logic; this one
//! covers "survive restart" with the storage a deployment uses.)

use std::sync::Arc;
use std::time::Duration;

use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_runtime::{FnHandler, Runtime, RuntimeConfig};
use sessiond_store::{now_ms, EngineAdmin, ObjectStore};
use tokio::sync::mpsc::unbounded_channel;

fn fast() -> RuntimeConfig {
    RuntimeConfig {
        alarm_backoff_base: Duration::from_millis(10),
        alarm_poll_max: Duration::from_millis(50),
        ..RuntimeConfig::default()
    }
}

#[tokio::test]
async fn alarms_survive_closing_and_reopening_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let due = now_ms() + 100;
    {
        let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).expect("open");
        let runtime = Runtime::builder(engine.clone() as Arc<dyn ObjectStore>, fast()).start();
        runtime
            .alarms()
            .set("gc", "client-1", "expire", due, "p1")
            .await
            .expect("set");
        runtime
            .alarms()
            .set("gc", "client-1", "rotate", due + 10, "p2")
            .await
            .expect("set");
        runtime.shutdown().await;
        engine.close().await.expect("close");
    }
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).expect("reopen");
    let mut builder = Runtime::builder(engine.clone() as Arc<dyn ObjectStore>, fast());
    let (tx, mut rx) = unbounded_channel();
    builder.alarm_handler(
        "gc",
        FnHandler(move |key: String, name: String, payload: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((key, name, payload));
                Ok::<(), sessiond_runtime::AlarmError>(())
            }
        }),
    );
    let runtime = builder.start();
    let mut fired = Vec::new();
    for _ in 0..2 {
        fired.push(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("fired in time")
                .expect("open"),
        );
    }
    fired.sort();
    assert_eq!(
        fired,
        [
            (
                "client-1".to_string(),
                "expire".to_string(),
                "p1".to_string()
            ),
            (
                "client-1".to_string(),
                "rotate".to_string(),
                "p2".to_string()
            )
        ]
    );
    assert!(now_ms() >= due, "not early");
    runtime.shutdown().await;
    let left = engine.object_alarms("gc", "client-1").await.expect("list");
    assert!(left.is_empty(), "completed alarms are deleted: {left:?}");
    engine.close().await.expect("close");
}
