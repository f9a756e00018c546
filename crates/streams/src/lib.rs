//! The Durable Streams capability: the public Durable Streams HTTP protocol at
//! `/v1/stream/<path>` (create, append, close, catch-up, long-poll, SSE, idempotent producers,
//! JSON mode, TTL, forks), built only on `Arc<dyn StreamStore>`: it never names an engine.
//!
//! How it holds together:
//! - **One writer per stream.** Every request locks its stream's object in the object runtime
//!   (`ObjectKind<StreamObject>`), which caches the decoded metadata between requests and is
//!   evicted when idle. Writers keep the lock across their commit; readers only take a
//!   snapshot under it.
//! - **One atomic, durable commit per write.** Append + close + producer state + `Stream-Seq`
//!   are a single `StreamStore::commit`; the reply and the wake-up of live readers happen only
//!   after it returned.
//! - **Offsets are byte positions** (fixed-width tokens on the wire). JSON streams store each
//!   message's exact bytes, many per chunk joined by `,` (see [`json`]); pages and fork
//!   sub-offsets cut only between messages.
//!   Forks share their source's offset space and read it through their lineage.
//! - **Cold ranges** come from a pluggable [`ColdReader`] (the segments crate), consulted for
//!   anything below the first hot chunk.
//!
//! Module map (one file per operation):
//! - [`access`]: who may act on which stream (full keys, prefix-scoped keys, read tokens);
//!   [`bound`]: read tokens bound to account sessions.
//! - [`list`]: `GET /v1/streams`, the operators' paged listing (a sessiond extension);
//!   [`producer_list`]: `GET /v1/stream-producers/<path>`, one stream's producers.
//! - [`routes`]: the router and dispatch; [`headers`]: parsing and common response headers.
//! - [`create`], [`fork`], [`append`], [`producer`], [`read`], [`live`], [`sse`], [`head`],
//!   [`delete`]: the operations.
//! - [`service`]: locking, lazy expiry, commits, the fork-aware page reader; `release`: hard
//!   deletes and the release of fork references.
//! - [`state`]: what is stored per stream; [`offset`], [`cursor`], [`json`], [`time`]: formats.
//! - [`cold`]: the cold-tier trait; [`tier`]: the segments cold tier, its `[streams.cold]`
//!   config and compaction under the stream lock; [`sweeper`]: background expiry;
//!   [`config`]: limits; [`limits`]: the per-prefix stream quota; [`metrics`]: Prometheus
//!   metrics, the system metrics stream, `Server-Timing`.
//! - [`subscriptions`]: the reserved `__ds` subscription APIs (webhooks, pull-wake).
//! - [`wakes`]: the per-path wake channels, fed by local commits and by other nodes.
//!
//! On a shared engine (several nodes on one Redis, `EngineAdmin::exclusive` false) nothing
//! cached is trusted: every lock re-reads the stream's metadata, so a reader never reports
//! `Stream-Up-To-Date` short of the engine's tail; a commit that loses a race with another
//! node (`Commit::Conflict`) is decided again on fresh state; readers also wake on the
//! engine's tail notifications (`StreamWakes`).

pub mod access;
pub mod append;
pub mod bound;
pub mod cold;
pub mod compaction;
pub mod config;
pub mod create;
pub mod cursor;
pub mod delete;
pub mod error;
mod failpoint;
pub mod fork;
pub mod head;
pub mod headers;
pub mod json;
pub mod limits;
pub mod list;
pub mod live;
pub mod metrics;
pub mod offset;
pub mod pages;
pub mod pipeline;
pub mod producer;
pub mod producer_list;
pub mod read;
mod release;
pub mod retention;
pub mod routes;
pub mod service;
mod shared_append;
pub mod sse;
pub mod state;
pub mod subscriptions;
pub mod sweeper;
pub mod tier;
pub mod time;
pub mod trim;
pub mod wakes;

pub use access::{StreamAccess, StreamGuard};
pub use cold::{ColdReader, NoCold};
pub use config::{ScopedKeyConfig, StreamsConfig};
pub use routes::router;
pub use service::Streams;
pub use state::StreamObject;
pub use tier::{ColdConfig, SegmentsCold};
