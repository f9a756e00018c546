//! Stream metadata and chunks the stream checks build their data from. Shared by the stream
//! suite (`streams.rs`, which also runs the others) and the suites it runs (compare-and-set,
//! pipeline, links, retention, compaction), so it sits below all of them.

use crate::streams::{StreamChunk, StreamMeta};

/// Metadata of `path` with `tail` and a recognizable state.
pub fn meta(path: &str, tail: u64, state: &[u8]) -> StreamMeta {
    StreamMeta {
        path: path.to_string(),
        tail,
        expires_at: None,
        state: state.to_vec(),
        start: 0,
    }
}

/// A chunk of `len` bytes at `offset`, filled with a pattern that depends on the offset (so a
/// chunk returned at the wrong offset is caught).
pub fn chunk(offset: u64, len: usize) -> StreamChunk {
    StreamChunk {
        offset,
        data: (0..len).map(|i| (offset as usize + i * 7) as u8).collect(),
    }
}
