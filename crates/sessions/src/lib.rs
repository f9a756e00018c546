//! The session and TTL-cache capability.
//!
//! - [`config`]: lifetimes and limits.
//! - [`service`]: session lifecycle rules (create, sliding get, atomic updates, per-user
//!   listing and revoke), shared by every route surface.
//! - [`cache`]: the namespaced TTL cache.
//! - [`merge`]: JSON Merge Patch (RFC 7396) and the seeds' shallow merge.
//! - [`routes`]: the native `/v1` API and the two wire-compatible seed surfaces.
//! - [`sweeper`]: background deletion of expired rows.
//! - [`user_data`]: a user's sessions for the export and erasure of `/v1/users/{u}`.
//! - [`security`]: security events, queued with the changes they record.
//!
//! The capability talks to storage only through `sessiond_store::{SessionStore, CacheStore}`
//! and to the object runtime for per-key serialization; it never names an engine.

pub mod cache;
pub mod config;
pub mod merge;
pub mod routes;
pub mod security;
pub mod service;
pub mod sweeper;
pub mod user_data;

pub use cache::CacheService;
pub use config::{CacheConfig, SessionsConfig};
pub use routes::SessionsState;
pub use service::{EdgeVerdict, EndReason, Revocation, SessionService};
