//! A damaged cold tier (overlapping segment index, frames that lie about their offsets) must
//! make a read fail with a 500, never panic the request's task or serve bytes at the wrong
//! offsets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use sessiond_runtime::ObjectKind;
use sessiond_store::memory::MemoryEngine;
use sessiond_store::StoreError;
use sessiond_streams::cold::SharedChunk;
use sessiond_streams::{create::create, read, ColdReader, Streams, StreamsConfig};

/// A cold tier that claims everything is sealed and returns fixed chunks.
struct Damaged(Vec<SharedChunk>);

#[async_trait]
impl ColdReader for Damaged {
    async fn read(&self, _: &str, _: u64, _: usize) -> Result<Vec<SharedChunk>, StoreError> {
        Ok(self.0.clone())
    }

    fn sealed_end_hint(&self, _: &str) -> u64 {
        u64::MAX
    }

    async fn delete_all(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

fn chunk(offset: u64, data: &'static [u8]) -> SharedChunk {
    SharedChunk {
        offset,
        data: Bytes::from_static(data),
    }
}

async fn read_with(cold: Vec<SharedChunk>, content_type: &str, body: &'static [u8]) -> StatusCode {
    let engine = Arc::new(MemoryEngine::new());
    let streams = Streams::new(
        engine,
        Arc::new(Damaged(cold)),
        ObjectKind::in_memory("stream"),
        StreamsConfig::default(),
        true,
    );
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    create(
        &streams,
        "s",
        &headers,
        Bytes::from_static(body),
        "http://x/v1/stream/s",
    )
    .await
    .unwrap();
    // The read runs in its own task, as a request does: a panic would show as a join error.
    let task = tokio::spawn(async move {
        match read::read(&streams, "s", &HeaderMap::new(), Some("offset=-1")).await {
            Ok(response) => response.status(),
            Err(error) => error.api.status,
        }
    });
    task.await.expect("the read task did not panic")
}

#[tokio::test]
async fn overlapping_cold_chunks_are_a_500() {
    let overlapping = vec![chunk(0, b"abcdef"), chunk(3, b"defghij")];
    let status = read_with(overlapping, "text/plain", b"abcdefghij").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    let backwards = vec![chunk(5, b"fghij"), chunk(0, b"abcde")];
    let status = read_with(backwards, "text/plain", b"abcdefghij").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    let overflowing = vec![chunk(0, b"ab"), chunk(u64::MAX - 1, b"cdefghij")];
    let status = read_with(overflowing, "text/plain", b"abcdefghij").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    let json = vec![chunk(0, b"1,2,3"), chunk(2, b"2,3")];
    let status = read_with(json, "application/json", b"[1,2,3]").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn contiguous_cold_chunks_still_read() {
    let good = vec![chunk(0, b"abcde"), chunk(5, b"fghij")];
    let status = read_with(good, "text/plain", b"abcdefghij").await;
    assert_eq!(status, StatusCode::OK);
}
