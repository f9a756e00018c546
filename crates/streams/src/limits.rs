//! The stream-count quota: at most `streams.max_streams_per_prefix` streams under one prefix
//! (the first `streams.quota_prefix_segments` segments of the path, e.g. `tenant-a` for
//! `tenant-a/chat/42`), so one tenant cannot fill the server with streams. Beyond it a create
//! is a 429 `stream_quota_exceeded` (no `Retry-After`: waiting does not help, deleting does).
//!
//! The check counts the prefix's streams in the engine (at most `max + 1` listed, so its cost
//! is bounded by the limit) and holds a per-prefix lock until the create is written, so two
//! concurrent creates cannot both take the last slot. The lock lives in the stream objects'
//! lock table under a key no stream can have (names never contain control characters), and
//! is always the last lock taken (after the new stream's own and, for a fork, its source's),
//! and nothing takes a stream lock while holding it: no lock cycles. Expired streams still count until they are swept.

use axum::http::StatusCode;

use crate::error::{StreamError, StreamResult};
use crate::service::{Guard, Streams};

/// The quota prefix of `path`: its first `segments` segments.
pub fn prefix(path: &str, segments: usize) -> &str {
    match path.match_indices('/').nth(segments.saturating_sub(1)) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

/// When a quota is configured, checks that one more stream fits under `path`'s prefix and
/// returns the prefix lock to hold until the stream is created.
pub async fn reserve(streams: &Streams, path: &str) -> StreamResult<Option<Guard>> {
    let max = streams.config.max_streams_per_prefix;
    if max == 0 {
        return Ok(None);
    }
    let key = prefix(path, streams.config.quota_prefix_segments.max(1));
    let guard = streams.objects.lock(&format!("\u{1}quota/{key}")).await;
    let mut count = streams
        .store
        .list_streams(&format!("{key}/"), None, max + 1)
        .await?
        .len();
    if key != path && streams.store.stream_meta(key).await?.is_some() {
        count += 1;
    }
    if count >= max {
        crate::metrics::rejected("stream_quota");
        return Err(StreamError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "stream_quota_exceeded",
            format!("the prefix `{key}` already holds {max} streams (streams.max_streams_per_prefix); delete some first"),
        ));
    }
    Ok(Some(guard))
}

#[cfg(test)]
mod tests {
    use super::prefix;

    #[test]
    fn prefix_is_the_first_segments() {
        assert_eq!(prefix("a/b/c", 1), "a");
        assert_eq!(prefix("a/b/c", 2), "a/b");
        assert_eq!(prefix("a/b/c", 5), "a/b/c");
        assert_eq!(prefix("solo", 1), "solo");
    }
}
