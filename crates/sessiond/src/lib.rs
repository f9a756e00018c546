//! The sessiond server: configuration, engine selection and wiring, nothing else.
//!
//! - [`config`]: the configuration tree and its layered loading.
//! - [`engine`]: opens the configured engine (the only module naming engine crates).
//! - One wiring step per capability, each returning what it serves and its background
//!   tasks: [`streams`], [`middleware`], [`sessions`] (with [`security`] events),
//!   [`realtime`], and [`users`] (a user's devices, export and erasure across them).
//! - [`app`]: the HTTP router assembled from the capabilities' routers.
//! - [`supervisor`]: runs the background tasks under the one shutdown signal.
//! - [`startup`]: the start-up summary (data directory, capabilities, defaults chosen).
//! - [`Server`] / [`run`]: wires everything, serves a bound listener and shuts down in order.
//!
//! Shutdown suits rolling restarts and keeps durability: one [`CancellationToken`] (the
//! supervisor's) is cancelled on the signal, or when a background task fails, and the
//! listener, every capability, every background task and the object runtime observe it. The
//! listener stops accepting, long-polls answer at once with their offset, SSE responses end
//! with a last control event, sockets get 1001 with a reason, background tasks stop;
//! in-flight requests (writes) finish, bounded by `http.shutdown_grace_s`; then the engine
//! closes, which flushes the SQLite writer. Every acknowledged write is durable before the
//! process exits, and a failed task makes [`run`] return its error (the binary exits 1).
//!
//! [`CancellationToken`]: tokio_util::sync::CancellationToken

pub mod app;
pub mod backup;
pub mod client;
pub mod config;
mod config_error;
pub mod engine;
pub mod listen;
pub mod listener;
pub mod middleware;
mod progress;
pub mod realtime;
pub mod security;
pub mod sessions;
pub mod startup;
mod stop_signal;
mod stream_sessions;
pub mod streams;
pub mod supervisor;
pub mod users;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sessiond_runtime::{Runtime, RuntimeConfig};
use sessiond_store::Stores;
use tokio::net::TcpListener;

pub use config::Config;
use supervisor::{Supervisor, Task};

/// The process-wide Prometheus recorder (installed once, shared by servers in one process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ];
            let sizes = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &latency,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Suffix("_size".into()),
                        &sizes,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "sessiond_streams_append_bytes".into(),
                        ),
                        &[
                            64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                            4194304.0, 16777216.0,
                        ],
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by an embedding app); then our
            // handle renders an empty page rather than failing the server.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// What every capability's wiring step reads.
#[derive(Clone, Copy)]
pub struct Wiring<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The engine's stores.
    pub stores: &'a Stores,
    /// The background tasks' supervisor (its token is the shutdown signal).
    pub supervisor: &'a Supervisor,
}

/// A server wired from its configuration: every capability built, nothing running but the
/// engine until [`serve`](Self::serve).
pub struct Server {
    config: Config,
    stores: Stores,
    supervisor: Supervisor,
    built: Built,
}

/// What the wiring steps build over the engine.
struct Built {
    /// The object runtime (its loops are among `tasks`; stopped last, before the engine).
    runtime: Runtime,
    /// The realtime hub, whose sockets the drain waits for.
    hub: Option<sessiond_realtime::Hub>,
    app: axum::Router,
    /// The capabilities served (the start-up line lists them).
    served: Vec<&'static str>,
    /// Every background task, started by [`Server::serve`].
    tasks: Vec<Task>,
}

impl Server {
    /// Opens the engine and wires each capability in turn, streams first (the others write
    /// into them). When a step fails nothing has started but the engine, which is dropped.
    pub async fn wire(config: Config) -> anyhow::Result<Server> {
        let metrics = metrics_handle();
        let stores = engine::open(&config).await?;
        let supervisor = Supervisor::new();
        let built = wire(&config, &stores, &supervisor, metrics).await;
        if built.is_err() {
            // Stops what the wiring attached to the token (wake listeners, hub drain).
            supervisor.token().cancel();
        }
        Ok(Server {
            built: built?,
            config,
            stores,
            supervisor,
        })
    }

    /// Adds a background task to start with the server's own (an embedding application's
    /// work): supervised like them, so its panic or error stops the server.
    pub fn add_task(&mut self, task: Task) {
        self.built.tasks.push(task);
    }

    /// Serves on `listener` until `shutdown` resolves or a background task fails, then shuts
    /// down in order: stop accepting and end live reads, close realtime connections, let
    /// in-flight requests finish (bounded by `http.shutdown_grace_s`), stop the background
    /// tasks and the object runtime, close the engine. A failed task is the error returned.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server {
            config,
            stores,
            supervisor,
            built:
                Built {
                    runtime,
                    hub,
                    app,
                    served,
                    tasks,
                },
        } = self;
        let addr = listener.local_addr()?;
        for task in tasks {
            supervisor.spawn(task);
        }
        supervisor.stop_on(shutdown);
        startup::announce(&config, addr, stores.admin.name(), &served);
        // The listener hands handlers the peer address (the realtime connection list shows
        // it) and enforces the connection caps and timeouts of `[http]`.
        let serve = listener::serve(
            listener,
            app,
            listener::Limits::from_config(&config.http),
            supervisor.token(),
        );
        let grace = Duration::from_secs(config.http.shutdown_grace_s);
        tokio::select! {
            () = serve => {}
            () = async { supervisor.stopped().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_s = grace.as_secs(), "in-flight requests still running after the grace period; closing them");
            }
        }
        tracing::info!("draining background work");
        if let Some(hub) = &hub {
            hub.shutdown(grace).await;
        }
        // Bounded like the requests: a task stuck on an engine that does not answer (each call
        // waiting for its reply timeout) must not hold the exit; stopping it there is no worse
        // than a crash, which every engine survives (what it had not written stays queued).
        let drained = tokio::time::timeout(grace, async {
            supervisor.wait().await;
            runtime.shutdown().await;
        });
        if drained.await.is_err() {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "background work still running after the grace period; stopping without it"
            );
        }
        let closed = stores.admin.close().await;
        if let Some(failure) = supervisor.failure() {
            if let Err(e) = closed {
                tracing::error!(error = %e, "closing the engine failed");
            }
            tracing::error!(
                task = failure.task,
                "sessiond stopped because a background task failed"
            );
            return Err(failure.into());
        }
        closed?;
        sessiond_http::access_line::flush();
        tracing::info!("sessiond stopped cleanly");
        Ok(())
    }
}

/// Runs the server on `listener` until `shutdown` resolves (or a background task fails),
/// then shuts down in order.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::wire(config).await?.serve(listener, shutdown).await
}

/// The wiring steps, in order: streams first (sessions relay their security events into
/// them, the middleware writes analytics to them, the hub its user events), then the
/// middleware (the hub asks its decider about cookies), sessions, realtime, the views across
/// them; the runtime's loops are made once every kind and alarm handler is registered.
async fn wire(
    config: &Config,
    stores: &Stores,
    supervisor: &Supervisor,
    metrics: PrometheusHandle,
) -> anyhow::Result<Built> {
    let wiring = Wiring {
        config,
        stores,
        supervisor,
    };
    let mut runtime = Runtime::builder(
        stores.objects.clone(),
        RuntimeConfig {
            idle_evict_after: Duration::from_secs(config.runtime.idle_evict_s),
            eviction_interval: Duration::from_secs(config.runtime.eviction_interval_s),
            alarm_poll_max: config.runtime.alarm_poll(config.engine),
            alarm_claim_lease: Duration::from_millis(config.runtime.alarm_claim_lease_ms),
            ..RuntimeConfig::default()
        },
    );
    runtime.cancellation_token(supervisor.token());
    // Open mode is decided once, here, and handed to every capability with the keys.
    let keys = config.server_keys();
    let streams = streams::wire(&wiring, &mut runtime).await?;
    let stream_service = streams.as_ref().map(|w| &w.streams);
    let middleware = middleware::wire(&wiring, &mut runtime, stream_service)?;
    let sessions = sessions::wire(&wiring, &mut runtime, stream_service);
    let realtime = realtime::wire(
        &wiring,
        keys.clone(),
        &mut runtime,
        &sessions.state.sessions,
        stream_service,
        middleware.decider.clone(),
    );
    let hub = realtime.as_ref().map(|r| &r.hub);
    let users = users::wire(&wiring, &sessions, hub);
    let bound = stream_service.and_then(|streams| {
        stream_sessions::bind(
            streams,
            &sessions.state.sessions,
            hub,
            config.streams.read_tokens_bound_to_sessions,
            supervisor,
        )
    });
    // The runtime's own loops (alarm scheduler, eviction sweep) run under the supervisor too.
    let (runtime, loops) = runtime.start_loops();

    let mut served = vec!["sessions", "cache"];
    if streams.is_some() {
        served.extend(["streams", "stream-subscriptions"]);
    }
    served.extend(middleware.decider.as_ref().map(|_| "middleware"));
    served.extend(realtime.as_ref().map(|_| "realtime"));
    served.extend(
        config
            .compat
            .session_state
            .enabled
            .then_some("compat-session-state"),
    );
    served.extend(config.compat.state.enabled.then_some("compat-state"));

    let mut tasks: Vec<Task> = loops
        .into_iter()
        .map(|(name, run)| Task::new(name, run))
        .collect();
    tasks.extend(sessions.tasks);
    tasks.extend(bound);
    let (streams, subscriptions) = match streams {
        Some(wired) => {
            tasks.extend(wired.tasks);
            (Some(wired.streams), Some(wired.subscriptions))
        }
        None => (None, None),
    };
    tasks.extend(middleware.tasks);
    let (hub, realtime_router) = match realtime {
        Some(wired) => {
            tasks.extend(wired.tasks);
            (Some(wired.hub), Some(wired.router))
        }
        None => (None, None),
    };
    let app = app::router(
        config,
        &keys,
        stores.clone(),
        app::Capabilities {
            sessions: sessions.state,
            streams,
            subscriptions,
            decider: middleware.decider,
            realtime: realtime_router,
            users,
            security: sessions.security.as_ref().map(|w| w.events.clone()),
        },
        metrics,
    );
    Ok(Built {
        runtime,
        hub,
        app,
        served,
        tasks,
    })
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
