//! Alarms: named, persisted timers per object, and the handlers that run when they fire.
//!
//! [`Alarms`] is the service capabilities call to arm, cancel and list timers; it writes to the
//! [`ObjectStore`] and nudges the scheduler (see [`crate::scheduler`]) so an alarm earlier than
//! everything it was sleeping for is not late. Because alarms live in the store, they survive
//! restarts and can be set from any node.
//!
//! Handlers are registered per kind. Two shapes, and why:
//! - [`AlarmHandler`] receives `(key, name, payload)` and does whatever it likes. It runs
//!   *outside* the object lock; if it touches object state it takes the lock itself
//!   (`kind.lock(key)`), which keeps it free to lock other objects first, or none.
//! - [`ObjectAlarmHandler`] receives the object's [`ObjectGuard`]: the runtime takes the lock
//!   before calling it, so the handler is serialized with requests for that object exactly like
//!   a Durable Object's `alarm()`. Register it with
//!   [`RuntimeBuilder::object_alarm_handler`](crate::RuntimeBuilder::object_alarm_handler).
//!
//! The runtime cannot take the lock around a plain `AlarmHandler` itself: the handler would
//! deadlock the moment it called `lock` on its own object.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sessiond_store::{now_ms, AlarmRecord, Durability, Millis, ObjectStore, StoreError};
use tokio::sync::Notify;

use crate::{ObjectGuard, ObjectKind, RuntimeError};

/// Why an alarm did not run to the end. Any of them means "retry later" (with backoff, up to
/// `alarm_max_attempts`); the error is logged with the alarm, never shown to a client.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    /// The handler's storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The handler's object could not be loaded or saved.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// No handler is registered for the alarm's kind.
    #[error("no alarm handler registered for kind {0:?}")]
    NoHandler(String),
    /// The handler panicked.
    #[error("alarm handler panicked: {0}")]
    Panicked(#[from] tokio::task::JoinError),
    /// Anything else the handler reports.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl AlarmError {
    /// A handler's own failure: any error, or a message (`AlarmError::other("not ready")`).
    pub fn other(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        AlarmError::Other(source.into())
    }
}

/// Runs fired alarms of one kind. `Err` means "retry later" (with backoff, up to the
/// configured number of attempts). Delivery is at least once: make handlers idempotent.
#[async_trait]
pub trait AlarmHandler: Send + Sync {
    /// Handles the alarm `name` of object `key`.
    async fn fire(&self, key: &str, name: &str, payload: &str) -> Result<(), AlarmError>;
}

/// Runs fired alarms of one kind while holding the object's lock.
#[async_trait]
pub trait ObjectAlarmHandler<S: Send + 'static>: Send + Sync {
    /// Handles the alarm `name` of the locked `object`.
    async fn fire(
        &self,
        object: &mut ObjectGuard<S>,
        name: &str,
        payload: &str,
    ) -> Result<(), AlarmError>;
}

/// Adapts an [`ObjectAlarmHandler`] into an [`AlarmHandler`] by locking the object first.
pub(crate) struct Locked<S, H> {
    pub(crate) kind: ObjectKind<S>,
    pub(crate) handler: H,
}

#[async_trait]
impl<S, H> AlarmHandler for Locked<S, H>
where
    S: Send + 'static,
    H: ObjectAlarmHandler<S>,
{
    async fn fire(&self, key: &str, name: &str, payload: &str) -> Result<(), AlarmError> {
        let mut object = self.kind.lock(key).await;
        self.handler.fire(&mut object, name, payload).await
    }
}

/// An [`AlarmHandler`] made from an async closure taking owned `(key, name, payload)`.
pub struct FnHandler<F>(pub F);

#[async_trait]
impl<F, Fut> AlarmHandler for FnHandler<F>
where
    F: Fn(String, String, String) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), AlarmError>> + Send,
{
    async fn fire(&self, key: &str, name: &str, payload: &str) -> Result<(), AlarmError> {
        (self.0)(key.to_string(), name.to_string(), payload.to_string()).await
    }
}

/// Arms, cancels and lists alarms. Cheap to clone; usable before the runtime starts (the
/// alarms simply wait in the store).
#[derive(Clone)]
pub struct Alarms {
    store: Arc<dyn ObjectStore>,
    notify: Arc<Notify>,
}

impl Alarms {
    /// An alarm service over `store`. Alarms set through a service not attached to a running
    /// [`Runtime`](crate::Runtime) are still picked up by any runtime within its poll interval.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Alarms {
            store,
            notify: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn notifier(&self) -> &Arc<Notify> {
        &self.notify
    }

    /// Creates or replaces the alarm `name` of object `(kind, key)`, due at `due_at` (unix ms;
    /// a past time fires as soon as possible). Replacing resets its attempt count. Replacing
    /// an alarm whose handler is running keeps the new one when that handler finishes.
    pub async fn set(
        &self,
        kind: &str,
        key: &str,
        name: &str,
        due_at: Millis,
        payload: &str,
    ) -> Result<(), RuntimeError> {
        let record = AlarmRecord {
            kind: kind.to_string(),
            key: key.to_string(),
            name: name.to_string(),
            due_at,
            attempt: 0,
            payload: payload.to_string(),
        };
        self.store.put_alarm(&record, Durability::Confirmed).await?;
        // Always wake the scheduler: it re-reads the earliest due time, which is cheaper than
        // tracking it here and correct across nodes. A stored permit covers a scheduler that
        // is between two waits.
        self.notify.notify_one();
        Ok(())
    }

    /// [`set`](Self::set) with a due time `delay` from now.
    pub async fn set_in(
        &self,
        kind: &str,
        key: &str,
        name: &str,
        delay: Duration,
        payload: &str,
    ) -> Result<(), RuntimeError> {
        let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let due_at = now_ms().saturating_add(delay);
        self.set(kind, key, name, due_at, payload).await
    }

    /// Deletes the alarm; true if it existed. A handler already running for it is not
    /// interrupted.
    pub async fn cancel(&self, kind: &str, key: &str, name: &str) -> Result<bool, RuntimeError> {
        Ok(self
            .store
            .delete_alarm(kind, key, name, None, Durability::Confirmed)
            .await?)
    }

    /// The object's alarms, by name. An alarm whose handler is running shows its claim: a
    /// `due_at` one lease in the future.
    pub async fn list(&self, kind: &str, key: &str) -> Result<Vec<AlarmRecord>, RuntimeError> {
        Ok(self.store.object_alarms(kind, key).await?)
    }
}

impl std::fmt::Debug for Alarms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarms").finish_non_exhaustive()
    }
}
