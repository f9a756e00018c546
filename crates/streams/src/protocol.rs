//! The protocol's vocabulary: where the capability's resources live and the names of the
//! headers it reads and writes.
//!
//! Only constants, at the bottom of the crate: errors, request parsing, every operation and
//! the access guard name the same paths and headers, and none of them has to import another
//! (or the router) to do so.

/// Where streams live.
pub const STREAM_PREFIX: &str = "/v1/stream/";

/// The route of the listing.
pub const LIST_PATH: &str = "/v1/streams";

/// Where a stream's producers are listed: `/v1/stream-producers/<name>`.
pub const PRODUCERS_PREFIX: &str = "/v1/stream-producers/";

/// Where `PATCH` addresses a stream's retention: `/v1/streams/<name>`.
pub const PATCH_PREFIX: &str = "/v1/streams/";

// Header names, lowercase as `HeaderMap` keys.
pub const NEXT_OFFSET: &str = "stream-next-offset";
pub const UP_TO_DATE: &str = "stream-up-to-date";
pub const CLOSED: &str = "stream-closed";
pub const CURSOR: &str = "stream-cursor";
pub const TTL: &str = "stream-ttl";
pub const EXPIRES_AT: &str = "stream-expires-at";
pub const SEQ: &str = "stream-seq";
pub const FORKED_FROM: &str = "stream-forked-from";
pub const FORK_OFFSET: &str = "stream-fork-offset";
pub const FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
pub const SSE_ENCODING: &str = "stream-sse-data-encoding";
pub const START_OFFSET: &str = "stream-start-offset";
pub const TRIM_BEFORE: &str = "stream-trim-before";
pub const COMPACTION: &str = "stream-compaction";
pub const COMPACT_BEFORE: &str = "stream-compact-before";
pub const RETENTION_MAX_AGE: &str = "stream-retention-max-age";
pub const RETENTION_MAX_BYTES: &str = "stream-retention-max-bytes";
pub const PRODUCER_ID: &str = "producer-id";
pub const PRODUCER_EPOCH: &str = "producer-epoch";
pub const PRODUCER_SEQ: &str = "producer-seq";
pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";
