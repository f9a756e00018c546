//! Where sealed (cold) ranges of a stream are read from.
//!
//! The engine's `read_chunks` returns only hot chunks; once a range has been sealed into a
//! segment in object storage, its chunks disappear from the hot log. The read path asks a
//! [`ColdReader`] for any range below the first hot chunk. Segments are a separate crate
//! (`sessiond-segments`) that plugs in through this trait, so the protocol code neither knows
//! nor cares where bytes live; without it, [`NoCold`] reports nothing sealed.
//!
//! [`SharedChunk`] is the trait's vocabulary, so it lives here, below both the service that
//! holds a reader and the page reader that cuts what it returns.

use async_trait::async_trait;
use axum::body::Bytes;
use sessiond_store::{StoreError, StreamChunk};

/// A stored chunk as the read path sees it: its offset and shared bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedChunk {
    /// Offset of its first byte.
    pub offset: u64,
    /// Its bytes.
    pub data: Bytes,
}

impl SharedChunk {
    /// Offset after its last byte.
    pub fn end(&self) -> u64 {
        // Checked by the read path (`pages::check_chunks`) before any arithmetic relies on it.
        self.offset.saturating_add(self.data.len() as u64)
    }
}

impl From<StreamChunk> for SharedChunk {
    fn from(chunk: StreamChunk) -> SharedChunk {
        SharedChunk {
            offset: chunk.offset,
            data: Bytes::from(chunk.data),
        }
    }
}

/// A source of sealed stream ranges.
#[async_trait]
pub trait ColdReader: Send + Sync {
    /// Chunks of sealed ranges covering `from` onwards, in offset order, about `max_bytes`
    /// (at least one chunk when any covers `from`); empty when `from` is at or past the end of
    /// the last sealed range.
    async fn read(
        &self,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<SharedChunk>, StoreError>;

    /// Where the stream's sealed range ended when this reader last looked (0 when unknown):
    /// offsets below it are read from here first. Only a hint: it decides the order in which
    /// the tiers are asked, never which bytes are returned.
    fn sealed_end_hint(&self, _path: &str) -> u64 {
        0
    }

    /// Deletes every sealed range of the stream (called before the stream itself is deleted).
    async fn delete_all(&self, path: &str) -> Result<(), StoreError>;

    /// Deletes the objects of `segments` of the stream, which a retention trim already dropped
    /// from the engine's index (`StreamStore::trim_stream`).
    async fn delete_segments(
        &self,
        _path: &str,
        _segments: &[sessiond_store::SegmentRef],
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// No cold tier: nothing is ever sealed.
pub struct NoCold;

#[async_trait]
impl ColdReader for NoCold {
    async fn read(&self, _: &str, _: u64, _: usize) -> Result<Vec<SharedChunk>, StoreError> {
        Ok(Vec::new())
    }

    async fn delete_all(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}
