//! Wiring: the builder that registers kinds and handlers, and the running [`Runtime`] that
//! owns the background tasks (alarm scheduler, eviction sweep) and stops them — or hands them
//! to a server that supervises all its tasks in one place ([`RuntimeBuilder::start_loops`]).
//!
//! Shutdown uses a `tokio_util` [`CancellationToken`]: the server can pass its own (the
//! runtime takes a child of it) so one signal stops everything. [`Runtime::shutdown`] stops the
//! loops and then waits for in-flight alarm handlers; [`Runtime::shutdown_timeout`] abandons
//! handlers that outlive a grace period (their alarms stay claimed and refire after the lease,
//! on this node after a restart or on another one).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessiond_store::ObjectStore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alarms::{AlarmHandler, Alarms, Locked, ObjectAlarmHandler};
use crate::codec::StateCodec;
use crate::config::RuntimeConfig;
use crate::eviction::{run_sweeper, Evictable};
use crate::scheduler::{Handlers, Scheduler};
use crate::table::lock_shard;
use crate::ObjectKind;

/// Registers kinds and alarm handlers, then [`start`](Self::start)s the runtime.
pub struct RuntimeBuilder {
    store: Arc<dyn ObjectStore>,
    config: RuntimeConfig,
    alarms: Alarms,
    handlers: Handlers,
    kinds: Vec<Arc<dyn Evictable>>,
    parent: Option<CancellationToken>,
}

impl RuntimeBuilder {
    /// The alarm service, available before start so handlers can hold it (to re-arm).
    pub fn alarms(&self) -> Alarms {
        self.alarms.clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Stops the runtime when `token` is cancelled (the runtime uses a child token).
    pub fn cancellation_token(&mut self, token: CancellationToken) -> &mut Self {
        self.parent = Some(token);
        self
    }

    /// A new in-memory kind, evicted after the configured idle time.
    pub fn kind<S: Send + 'static>(&mut self, name: impl Into<String>) -> ObjectKind<S> {
        let kind = ObjectKind::in_memory(name);
        kind.set_idle_after(self.config.idle_evict_after);
        self.register_kind(&kind);
        kind
    }

    /// A new persistent kind over the runtime's store, evicted after the configured idle time.
    pub fn persistent_kind<S: Send + 'static>(
        &mut self,
        name: impl Into<String>,
        codec: impl StateCodec<S>,
    ) -> ObjectKind<S> {
        let kind = ObjectKind::persistent(name, self.store.clone(), codec);
        kind.set_idle_after(self.config.idle_evict_after);
        self.register_kind(&kind);
        kind
    }

    /// Adds an existing kind to the eviction sweep (its own idle time is kept).
    pub fn register_kind<S: Send + 'static>(&mut self, kind: &ObjectKind<S>) -> &mut Self {
        self.kinds.push(kind.inner.clone());
        self
    }

    /// Sets the handler for alarms of `kind` (replacing any previous one). It runs outside the
    /// object lock; see [`crate::alarms`] for the choice between the two handler shapes.
    pub fn alarm_handler(
        &mut self,
        kind: impl Into<String>,
        handler: impl AlarmHandler + 'static,
    ) -> &mut Self {
        let kind = kind.into();
        if self
            .handlers
            .insert(kind.clone(), Arc::new(handler))
            .is_some()
        {
            tracing::warn!(kind, "alarm handler replaced");
        }
        self
    }

    /// Sets the handler for alarms of `kind`'s objects, run while holding the object's lock.
    pub fn object_alarm_handler<S, H>(&mut self, kind: &ObjectKind<S>, handler: H) -> &mut Self
    where
        S: Send + 'static,
        H: ObjectAlarmHandler<S> + 'static,
    {
        let locked = Locked {
            kind: kind.clone(),
            handler,
        };
        self.alarm_handler(kind.name().to_string(), locked)
    }

    /// Spawns the alarm scheduler and the eviction sweep. Must be called inside a Tokio runtime.
    pub fn start(self) -> Runtime {
        let (runtime, loops) = self.start_loops();
        let tasks = loops
            .into_iter()
            .map(|(_, run)| tokio::spawn(run))
            .collect();
        *lock_shard(&runtime.tasks) = tasks;
        runtime
    }

    /// Like [`start`](Self::start), but hands the two loops (named `alarm-scheduler` and
    /// `eviction-sweep`) to the caller to run with its own background tasks, so that one
    /// supervisor sees a loop that panics. They end when the runtime's token is cancelled;
    /// [`Runtime::shutdown`] then waits only for the alarm handlers in flight.
    pub fn start_loops(self) -> (Runtime, Vec<(&'static str, Loop)>) {
        let cancel = match &self.parent {
            Some(parent) => parent.child_token(),
            None => CancellationToken::new(),
        };
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();
        let scheduler = Arc::new(Scheduler {
            store: self.store.clone(),
            notify: self.alarms.notifier().clone(),
            handlers: self.handlers,
            config: self.config.clone(),
            cancel: cancel.clone(),
            abort: abort.clone(),
            tracker: tracker.clone(),
        });
        let loops: Vec<(&'static str, Loop)> = vec![
            ("alarm-scheduler", Box::pin(scheduler.run())),
            (
                "eviction-sweep",
                Box::pin(run_sweeper(
                    self.kinds.clone(),
                    self.config.eviction_interval,
                    cancel.clone(),
                )),
            ),
        ];
        let runtime = Runtime {
            config: self.config,
            alarms: self.alarms,
            kinds: self.kinds,
            cancel,
            abort,
            tracker,
            tasks: Mutex::new(Vec::new()),
        };
        (runtime, loops)
    }
}

/// One of the runtime's background loops, not started yet.
pub type Loop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The running object runtime. Dropping it stops the background loops (without waiting);
/// call [`shutdown`](Self::shutdown) to also wait for running alarm handlers.
pub struct Runtime {
    config: RuntimeConfig,
    alarms: Alarms,
    kinds: Vec<Arc<dyn Evictable>>,
    cancel: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Runtime {
    /// A builder over `store` with `config`.
    pub fn builder(store: Arc<dyn ObjectStore>, config: RuntimeConfig) -> RuntimeBuilder {
        RuntimeBuilder {
            alarms: Alarms::new(store.clone()),
            store,
            config,
            handlers: HashMap::new(),
            kinds: Vec::new(),
            parent: None,
        }
    }

    /// The alarm service.
    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }

    /// The configuration in use.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The token that stops this runtime's loops.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Number of alarm handlers running now.
    pub fn alarms_in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// Runs one eviction sweep over every registered kind now; returns objects evicted.
    pub fn evict_idle(&self) -> usize {
        let now = Instant::now();
        self.kinds.iter().map(|k| k.evict_idle(now)).sum()
    }

    async fn stop_loops(&self) {
        self.cancel.cancel();
        let tasks = std::mem::take(&mut *lock_shard(&self.tasks));
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "runtime task failed");
            }
        }
        self.tracker.close();
    }

    /// Stops the scheduler and the sweep, then waits for every in-flight alarm handler.
    pub async fn shutdown(&self) {
        self.stop_loops().await;
        self.tracker.wait().await;
    }

    /// Like [`shutdown`](Self::shutdown), but abandons handlers still running after `grace`
    /// (their alarms refire after the claim lease). True if everything finished in time.
    pub async fn shutdown_timeout(&self, grace: Duration) -> bool {
        self.stop_loops().await;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        self.abort.cancel();
        self.tracker.wait().await;
        false
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("kinds", &self.kinds.len())
            .field("alarms_in_flight", &self.tracker.len())
            .finish()
    }
}
