//! A stream the sweeper cannot remove (its cold segments cannot be deleted) is logged and
//! skipped: the other expired streams of the pass are still removed, and later passes see past
//! it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use sessiond_runtime::ObjectKind;
use sessiond_store::memory::MemoryEngine;
use sessiond_store::{StoreError, StreamStore};
use sessiond_streams::cold::SharedChunk;
use sessiond_streams::sweeper::Sweeper;
use sessiond_streams::{create::create, ColdReader, Streams, StreamsConfig};

/// A cold tier whose deletion fails for streams named `bad…`.
struct FailingCold;

#[async_trait]
impl ColdReader for FailingCold {
    async fn read(&self, _: &str, _: u64, _: usize) -> Result<Vec<SharedChunk>, StoreError> {
        Ok(Vec::new())
    }

    async fn delete_all(&self, path: &str) -> Result<(), StoreError> {
        if path.starts_with("bad") {
            return Err(StoreError::Unavailable("cold tier: cannot delete".into()));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_stream_does_not_end_the_sweep() {
    let engine = Arc::new(MemoryEngine::new());
    let streams = Streams::new(
        engine.clone(),
        Arc::new(FailingCold),
        ObjectKind::in_memory("stream"),
        StreamsConfig::default(),
        true,
    );
    // Already expired; the failing ones first in expiry order.
    let mut names = Vec::new();
    for (i, name) in ["bad-1", "bad-2", "good-1", "good-2"].iter().enumerate() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let at = format!("2020-01-01T00:00:0{i}Z");
        h.insert("stream-expires-at", HeaderValue::from_str(&at).unwrap());
        create(&streams, name, &h, Bytes::from_static(b"x"), "http://x/")
            .await
            .unwrap();
        names.push(*name);
    }
    let mut sweeper = Sweeper::default();
    assert_eq!(sweeper.pass(&streams).await.unwrap(), 4);
    for name in names {
        let left = engine.stream_meta(name).await.unwrap().is_some();
        assert_eq!(left, name.starts_with("bad"), "{name}");
    }
    // The next pass skips the ones set aside instead of failing on them again.
    assert_eq!(sweeper.pass(&streams).await.unwrap(), 0);
}
