//! sessiond's object runtime: what Durable Objects give Workers, for any web stack.
//!
//! Capabilities (sessions, the cookie middleware, the WebSocket hub) build on four pieces:
//! - **Serialized objects.** An [`ObjectKind<S>`] maps keys to in-memory state `S` behind a
//!   per-key async lock; [`ObjectKind::lock`] returns an [`ObjectGuard`] held across storage
//!   awaits, so a read-modify-write of one key is atomic while other keys run in parallel.
//! - **Idle eviction.** Objects unused for [`RuntimeConfig::idle_evict_after`] leave memory
//!   (never while locked or awaited); a background sweep does it.
//! - **Persistence helpers.** A kind built with a [`StateCodec`] loads, saves and deletes its
//!   state through [`sessiond_store::ObjectStore`] and lists objects by prefix with a cursor.
//! - **Alarms.** Named, persisted timers per object ([`Alarms`]), fired at least once by a
//!   scheduler task with claim leases and exponential-backoff retries, optionally under the
//!   object's lock ([`ObjectAlarmHandler`]).
//!
//! The runtime never names a storage engine: it holds `Arc<dyn ObjectStore>`.
//!
//! Module map:
//! - [`config`]: [`RuntimeConfig`] and its defaults.
//! - [`kind`]: [`ObjectKind`], the public face of a kind; `table`: its sharded per-key lock
//!   table.
//! - [`guard`]: [`ObjectGuard`], exclusive access plus load/save/delete.
//! - [`codec`]: [`StateCodec`], [`JsonCodec`], [`FnCodec`].
//! - [`eviction`]: the idle sweep.
//! - [`alarms`]: [`Alarms`] service and handler traits.
//! - [`scheduler`]: the alarm loop (claim, fire, retry).
//! - [`runtime`]: [`RuntimeBuilder`] and [`Runtime`] (start, shutdown).
//!
//! Layering, bottom → top: `config`, `codec` → `table` (the slots every other part works on)
//! → `guard` and `eviction` → `kind` (hands out guards, runs the sweep) → `alarms`,
//! `scheduler` → `runtime` (wiring). The table sits lowest because the guard, the sweep and
//! the kind all need its slots, and none of them may need another to reach it.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn sessiond_store::ObjectStore>) -> Result<(), sessiond_runtime::RuntimeError> {
//! use sessiond_runtime::{JsonCodec, Runtime, RuntimeConfig};
//! use sessiond_store::Durability;
//!
//! let mut builder = Runtime::builder(store, RuntimeConfig::default());
//! let counters = builder.persistent_kind::<u64>("counter", JsonCodec);
//! let runtime = builder.start();
//!
//! let mut object = counters.lock("visits").await;
//! let next = object.load().await?.copied().unwrap_or(0) + 1;
//! object.save(next, Durability::Confirmed).await?;
//! drop(object);
//!
//! runtime.alarms().set_in("counter", "visits", "reset", std::time::Duration::from_secs(60), "").await?;
//! runtime.shutdown().await;
//! # Ok(()) }
//! ```

pub mod alarms;
pub mod codec;
pub mod config;
pub mod eviction;
pub mod guard;
pub mod kind;
pub mod runtime;
pub mod scheduler;
mod table;

pub use alarms::{AlarmError, AlarmHandler, Alarms, FnHandler, ObjectAlarmHandler};
pub use codec::{CodecError, FnCodec, JsonCodec, StateCodec};
pub use config::RuntimeConfig;
pub use guard::ObjectGuard;
pub use kind::ObjectKind;
pub use runtime::{Runtime, RuntimeBuilder};
pub use sessiond_store::{AlarmRecord, Durability, Millis};
pub use tokio_util::sync::CancellationToken;

use sessiond_store::StoreError;

/// Errors of the runtime's storage helpers.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kind's codec could not encode or decode the object's state.
    #[error("cannot encode or decode state of {kind}/{key}: {source}")]
    Codec {
        /// Object kind.
        kind: String,
        /// Object key.
        key: String,
        /// What the codec reported.
        #[source]
        source: codec::CodecError,
    },
    /// A persistence helper was used on a kind built without a store and codec.
    #[error("object kind {0:?} has no persistence configured")]
    NotPersistent(String),
}
