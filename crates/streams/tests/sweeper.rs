//! The sweeper and lazy expiry, driven through the service on the memory engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use sessiond_runtime::ObjectKind;
use sessiond_store::memory::MemoryEngine;
use sessiond_store::StreamStore;
use sessiond_streams::{create::create, sweeper, NoCold, Streams, StreamsConfig};

fn service(engine: &Arc<MemoryEngine>) -> Streams {
    Streams::new(
        engine.clone(),
        Arc::new(NoCold),
        ObjectKind::in_memory("stream"),
        StreamsConfig::default(),
        true,
    )
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[tokio::test]
async fn sweeper_removes_expired_streams_and_spares_sources_of_forks() {
    let engine = Arc::new(MemoryEngine::new());
    let streams = service(&engine);
    let loc = "http://x/v1/stream/s";
    let ttl = headers(&[("stream-ttl", "1"), ("content-type", "text/plain")]);
    create(&streams, "short", &ttl, Bytes::from_static(b"x"), loc)
        .await
        .unwrap();
    create(&streams, "source", &ttl, Bytes::from_static(b"abc"), loc)
        .await
        .unwrap();
    let plain = headers(&[("content-type", "text/plain")]);
    create(&streams, "forever", &plain, Bytes::new(), loc)
        .await
        .unwrap();
    let fork = headers(&[
        ("stream-forked-from", "/v1/stream/source"),
        ("stream-expires-at", "2999-01-01T00:00:00Z"),
    ]);
    create(&streams, "fork", &fork, Bytes::new(), loc)
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1100)).await;
    sweeper::sweep_once(&streams).await.unwrap();
    assert!(
        engine.stream_meta("short").await.unwrap().is_none(),
        "expired, removed"
    );
    assert!(engine.stream_meta("forever").await.unwrap().is_some());
    let source = engine
        .stream_meta("source")
        .await
        .unwrap()
        .expect("kept for its fork");
    assert_eq!(
        source.expires_at, None,
        "soft-deleted sources leave the expiry index"
    );
    assert_eq!(
        sweeper::sweep_once(&streams).await.unwrap(),
        0,
        "nothing left to sweep"
    );

    sessiond_streams::delete::delete(&streams, "fork")
        .await
        .unwrap();
    assert!(
        engine.stream_meta("source").await.unwrap().is_none(),
        "cascade"
    );
}
