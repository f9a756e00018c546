//! Metadata written before producers had their own rows kept every producer inside the
//! stream's state. Such a stream keeps working: its producers are still known, and the first
//! commit moves them into rows, after which the metadata no longer carries them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use sessiond_runtime::ObjectKind;
use sessiond_store::memory::MemoryEngine;
use sessiond_store::{Durability, StreamMeta, StreamStore};
use sessiond_streams::{append::append, NoCold, Streams, StreamsConfig};

fn producer(id: &str, seq: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    h.insert("producer-id", HeaderValue::from_str(id).unwrap());
    h.insert("producer-epoch", HeaderValue::from_static("2"));
    h.insert(
        "producer-seq",
        HeaderValue::from_str(&seq.to_string()).unwrap(),
    );
    h
}

#[tokio::test]
async fn producers_stored_in_old_metadata_move_to_rows() {
    let engine = Arc::new(MemoryEngine::new());
    let state = serde_json::json!({
        "content_type": "text/plain", "ttl_s": null, "expires_at": null, "last_access": 0,
        "req_ttl_s": null, "req_expires_at": null, "closed": false, "closed_by": null,
        "producers": {"a": {"epoch": 2, "seq": 5}, "b": {"epoch": 2, "seq": 1}},
        "last_seq": null, "start": 0, "lineage": [], "fork": null, "forks": 0,
        "soft_deleted": false, "created_at": 1
    });
    let meta = StreamMeta {
        path: "old".into(),
        tail: 0,
        expires_at: None,
        state: serde_json::to_vec(&state).unwrap(),
        start: 0,
    };
    assert!(engine
        .create_stream(&meta, &[], Durability::Confirmed)
        .await
        .unwrap());
    let streams = Streams::new(
        engine.clone(),
        Arc::new(NoCold),
        ObjectKind::in_memory("stream"),
        StreamsConfig::default(),
        true,
    );
    // A retry of `a`'s last request is a duplicate; its next one is accepted.
    let dup = append(&streams, "old", &producer("a", 5), Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(dup.status(), 204);
    let next = append(&streams, "old", &producer("a", 6), Bytes::from_static(b"y"))
        .await
        .unwrap();
    assert_eq!(next.status(), 200);
    // Both producers now have rows and the metadata no longer lists them.
    assert!(engine.stream_producer("old", "a").await.unwrap().is_some());
    assert!(engine.stream_producer("old", "b").await.unwrap().is_some());
    let stored = engine.stream_meta("old").await.unwrap().unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&stored.state).unwrap();
    assert!(stored.get("producers").is_none(), "{stored}");
    // `b` is still known from its row (a fresh service has nothing cached): a gap is a 409,
    // its next seq a 200.
    let streams = Streams::new(
        engine.clone(),
        Arc::new(NoCold),
        ObjectKind::in_memory("stream"),
        StreamsConfig::default(),
        true,
    );
    let gap = append(&streams, "old", &producer("b", 9), Bytes::from_static(b"z")).await;
    assert_eq!(gap.err().map(|e| e.api.status.as_u16()), Some(409));
    let ok = append(&streams, "old", &producer("b", 2), Bytes::from_static(b"z"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}
