//! `create::create_with_json_values`: a server-side producer's first request creates the
//! stream with its values and the producer's row in one write, so a replay of that request
//! (another relay, a pass after a crash) is refused by the row like a replay of any append,
//! and an existing stream is left to the append path untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use sessiond_runtime::ObjectKind;
use sessiond_store::memory::MemoryEngine;
use sessiond_store::StreamStore;
use sessiond_streams::append::append_json_values_expecting;
use sessiond_streams::create::create_with_json_values;
use sessiond_streams::producer::{moved_to, ExpectedEpoch};
use sessiond_streams::{NoCold, Streams, StreamsConfig};

fn service(engine: Arc<MemoryEngine>) -> Streams {
    Streams::new(
        engine,
        Arc::new(NoCold),
        ObjectKind::in_memory("stream"),
        StreamsConfig::default(),
        true,
    )
}

fn headers(content_type: &'static str, epoch: u64, seq: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static(content_type));
    h.insert("producer-id", HeaderValue::from_static("relay:q"));
    h.insert("producer-epoch", epoch.into());
    h.insert("producer-seq", seq.into());
    h
}

fn values(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

async fn stored(engine: &MemoryEngine, path: &str) -> Vec<u8> {
    let chunks = engine.read_chunks(path, 0, usize::MAX).await.unwrap();
    chunks.into_iter().flat_map(|c| c.data).collect()
}

#[tokio::test]
async fn the_first_request_creates_the_stream_with_its_values_and_producer_row() {
    let engine = Arc::new(MemoryEngine::new());
    let streams = service(engine.clone());
    let json = headers("application/json", 7, 0);
    let made = create_with_json_values(
        &streams,
        "s",
        &json,
        values(&["1", r#"{"a":2}"#]),
        ExpectedEpoch(None),
    )
    .await
    .unwrap()
    .expect("created");
    assert_eq!(made.status(), StatusCode::CREATED);
    assert_eq!(made.headers()["producer-epoch"], "7");
    let data = stored(&engine, "s").await;
    assert!(String::from_utf8_lossy(&data).contains(r#"{"a":2}"#));
    assert!(engine
        .stream_producer("s", "relay:q")
        .await
        .unwrap()
        .is_some());

    // The stream exists: nothing written, the caller appends instead.
    let again = create_with_json_values(&streams, "s", &json, values(&["3"]), ExpectedEpoch(None));
    assert!(again.await.unwrap().is_none());
    assert_eq!(stored(&engine, "s").await, data);

    // A replay that believes the stream has no row is refused with the row's epoch...
    let replay =
        append_json_values_expecting(&streams, "s", &json, values(&["1"]), ExpectedEpoch(None));
    let refused = replay.await.expect_err("a replay");
    assert_eq!(moved_to(&refused), Some(Some(7)));
    assert_eq!(stored(&engine, "s").await, data);
    // ...and the producer's next request, decided on that epoch, is appended.
    let next = headers("application/json", 9, 0);
    let appended =
        append_json_values_expecting(&streams, "s", &next, values(&["4"]), ExpectedEpoch(Some(7)));
    assert_eq!(appended.await.unwrap().status(), StatusCode::OK);
    assert!(stored(&engine, "s").await.len() > data.len());
}

#[tokio::test]
async fn refused_creates_write_nothing() {
    let engine = Arc::new(MemoryEngine::new());
    let streams = service(engine.clone());
    let cases = [
        (
            headers("text/plain", 1, 0),
            ExpectedEpoch(None),
            StatusCode::BAD_REQUEST,
        ),
        // A first request of a producer is its Producer-Seq 0.
        (
            headers("application/json", 1, 1),
            ExpectedEpoch(None),
            StatusCode::CONFLICT,
        ),
        // The producer believed the stream had its row: the refusal says it has none.
        (
            headers("application/json", 5, 0),
            ExpectedEpoch(Some(3)),
            StatusCode::PRECONDITION_FAILED,
        ),
    ];
    for (h, expected, status) in cases {
        let e = create_with_json_values(&streams, "n", &h, values(&["1"]), expected)
            .await
            .expect_err("refused");
        assert_eq!(e.api.status, status);
        if status == StatusCode::PRECONDITION_FAILED {
            assert_eq!(moved_to(&e), Some(None));
        }
        assert!(engine.stream_meta("n").await.unwrap().is_none());
    }
    let json = headers("application/json", 1, 0);
    let bad = create_with_json_values(&streams, "n", &json, values(&["1 2"]), ExpectedEpoch(None));
    assert_eq!(
        bad.await.expect_err("not one value").api.status,
        StatusCode::BAD_REQUEST
    );
    assert!(engine.stream_meta("n").await.unwrap().is_none());
}
