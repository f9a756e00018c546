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
//! Layering, bottom → top (a module imports only from the layers below it, never upward):
//! 1. **Vocabulary and formats**: [`protocol`] (paths and header names), [`offset`],
//!    [`cursor`], [`time`], and the [`metrics`] counters every layer records into.
//! 2. **Protocol types**: [`error`]; [`wakes`] and [`state`] (what is stored per stream,
//!    retention and compaction settings included); [`headers`] (reading a request);
//!    [`cold`] (the cold-tier trait); [`bound`]; [`producer`] (the idempotence check);
//!    [`config`] (every `[streams.*]` section, plain data); [`json`] (JSON mode).
//! 3. **Service**: [`service`] (locking, lazy expiry, commits), [`pages`] (the fork-aware
//!    page reader and how a page is answered), `pipeline`, `release`, [`limits`].
//! 4. **Operations**, each on the service: [`create`], [`fork`], [`append`], [`trim`],
//!    [`compaction`], [`retention`], [`read`], [`live`], [`sse`], [`head`], [`delete`],
//!    [`list`], [`producer_list`], [`access`] (who may act on which stream), background work
//!    ([`sweeper`], [`tier`], [`metrics_stream`]) and the [`subscriptions`] sub-capability.
//! 5. **HTTP surface**: [`routes`], the router and dispatch; nothing imports it.
//!
//! Why this order: the service must hold the config and read the stored types, so both sit
//! below it even where an operation high up owns the knob (a setting is data, not the code
//! that acts on it); names that several layers share (header names, paths, the chunk the cold
//! tier returns) live in the lowest module that needs them, so no module reaches up for one.
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
mod draining;
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
pub mod metrics_stream;
pub mod offset;
pub mod pages;
pub mod pipeline;
pub mod producer;
pub mod producer_list;
pub mod protocol;
pub mod read;
pub mod recent;
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
pub use config::{ColdConfig, ScopedKeyConfig, StreamsConfig};
pub use routes::router;
pub use service::Streams;
pub use state::StreamObject;
pub use tier::SegmentsCold;
