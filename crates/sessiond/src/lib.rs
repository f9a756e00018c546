//! The sessiond server: configuration, engine selection and wiring, nothing else.
//!
//! - [`config`]: the configuration tree and its layered loading.
//! - [`engine`]: opens the configured engine (the only module naming engine crates).
//! - [`app`]: the HTTP router assembled from the capabilities' routers.
//! - [`middleware`]: the session middleware's analytics sink and its system-stream writer.
//! - [`users`]: a user's devices, export and erasure (views across capabilities).
//! - [`startup`]: the start-up summary (data directory, capabilities, defaults chosen).
//! - [`run`]: starts everything on a bound listener and shuts it down in order.
//!
//! Shutdown suits rolling restarts and keeps durability: one [`CancellationToken`] is
//! cancelled on the signal and every capability observes it. The listener stops accepting,
//! long-polls answer at once with their offset, SSE responses end with a last control event,
//! sockets get 1001 with a reason, background tasks stop; in-flight requests (writes) finish,
//! bounded by `http.shutdown_grace_s`; then the engine closes, which flushes the SQLite
//! writer. Every acknowledged write is durable before the process exits.

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
pub mod startup;
mod stream_sessions;
pub mod users;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sessiond_runtime::{ObjectKind, Runtime, RuntimeConfig};
use sessiond_sessions::{CacheService, SessionService, SessionsState};
use sessiond_store::SessionRecord;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use config::EngineKind;

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

/// Runs the server on `listener` until `shutdown` resolves, then shuts down in order.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = metrics_handle();
    let stores = engine::open(&config).await?;
    // The one shutdown signal: cancelled when `shutdown` resolves, observed by everything.
    let stop = CancellationToken::new();
    let addr = listener.local_addr()?;
    // Open mode is decided once, here, and handed to every capability with the keys.
    let keys = config.server_keys();

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
    let session_objects: ObjectKind<SessionRecord> = runtime.kind("session");
    let realtime_users =
        runtime.persistent_kind(sessiond_realtime::USER_KIND, sessiond_runtime::JsonCodec);
    let user_locks: ObjectKind<()> = runtime.kind("user");
    // Durable Streams: one in-memory object per stream path (metadata cache + wake-ups), and
    // the cold tier (sealed segments in object storage) unless disabled.
    let cold_tier = match &stores.streams {
        Some(_) => config
            .streams
            .cold
            .open(&config.data_dir, config.engine == EngineKind::Memory)
            .map_err(|e| anyhow::anyhow!("cannot open the streams cold tier: {e}"))?,
        None => None,
    };
    // Subscriptions (`__ds`) see every stream write through an observing store wrapper and
    // keep their records in the object runtime.
    let (observer, changes) =
        sessiond_streams::subscriptions::observer(config.streams.subscriptions.observer_queue);
    let subscription_kind = runtime.persistent_kind(
        sessiond_streams::subscriptions::KIND,
        sessiond_runtime::JsonCodec,
    );
    // Lease and retry timers are runtime alarms, so any node takes over a dead node's.
    let subscription_alarms = sessiond_streams::subscriptions::AlarmTarget::default();
    runtime.alarm_handler(
        sessiond_streams::subscriptions::KIND,
        subscription_alarms.clone(),
    );
    let streams = stores.streams.clone().map(|store| {
        let cold: Arc<dyn sessiond_streams::ColdReader> = match &cold_tier {
            Some(tier) => Arc::new(sessiond_streams::SegmentsCold::new(
                tier.clone(),
                store.clone(),
            )),
            None => Arc::new(sessiond_streams::NoCold),
        };
        sessiond_streams::Streams::new(
            observer.wrap(store),
            cold,
            runtime.kind("stream"),
            config.streams.clone(),
            stores.admin.exclusive(),
        )
        .with_shutdown(stop.clone())
    });
    // On a shared engine, readers also wake for appends made by other nodes.
    if let (Some(streams), Some(wakes)) = (&streams, &stores.stream_wakes) {
        streams.listen(wakes.as_ref());
    }
    // Session middleware: one object per client, a TTL alarm each, analytics to a sink.
    let (analytics_sink, analytics_rx) = middleware::sink(&config, streams.is_some())?;
    let decider = match config.middleware.enabled {
        true => Some(
            sessiond_middleware::Decider::new(
                config.middleware.clone(),
                &mut runtime,
                stores.objects.clone(),
                stores.admin.exclusive(),
                analytics_sink,
            )
            .map_err(anyhow::Error::msg)?,
        ),
        false => None,
    };
    let runtime = runtime.start();
    let subscriptions = match &streams {
        Some(streams) => Some(
            sessiond_streams::subscriptions::Subscriptions::open(
                streams.clone(),
                subscription_kind,
                stores.objects.clone(),
                observer,
                runtime.alarms().clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot open stream subscriptions: {e}"))?,
        ),
        None => None,
    };
    if let Some(subs) = &subscriptions {
        subscription_alarms.bind(subs);
    }

    let sessions_config = Arc::new(sessiond_sessions::SessionsConfig {
        cookies: Some(config.session_cookies()),
        ..config.sessions.clone()
    });
    let mut session_service = SessionService::new(
        stores.sessions.clone(),
        sessions_config.clone(),
        session_objects,
        user_locks,
        stores.admin.exclusive(),
    );
    // Security events need the streams they are relayed to.
    let security = streams
        .clone()
        .filter(|_| config.security.enabled)
        .map(|streams| security::wire(&config, &stores, streams));
    if let Some(wired) = &security {
        session_service = session_service.with_security(wired.events.clone());
    }
    let realtime = config.realtime.enabled.then(|| {
        realtime::hub(
            &config,
            keys.clone(),
            realtime_users,
            &session_service,
            streams.clone(),
            decider.clone(),
        )
    });
    // On a shared engine the hub's channels and user-directed actions span every node.
    if let (Some(hub), Some(bus)) = (&realtime, stores.realtime.clone()) {
        hub.attach_bus(bus);
    }
    // … and so does presence (users' online state, channel metas, socket limits).
    if let (Some(hub), Some(presence)) = (&realtime, stores.presence.clone()) {
        hub.attach_presence(presence);
    }
    if let Some(hub) = &realtime {
        hub.drain_on(stop.clone());
    }
    // Export and erasure ask every capability holding data keyed by a user, in this order.
    let mut user_sources = vec![session_service.user_data()];
    user_sources.extend(realtime.as_ref().map(sessiond_realtime::Hub::user_data));
    // Last: the sessions' endings above write no events for an erasure, so nothing recreates
    // the user's security stream after this source deleted it.
    user_sources.extend(security.as_ref().map(|w| {
        Arc::new(w.user_data.clone()) as Arc<dyn sessiond_http::user_data::UserDataSource>
    }));
    let users = users::Users::new(
        session_service.clone(),
        realtime.clone(),
        user_sources,
        stores.erasures.clone(),
        (config.engine == EngineKind::Sqlite).then(|| config.data_dir.join(users::ERASURE_FILE)),
    );
    if let Some(streams) = &streams {
        stream_sessions::bind(
            streams,
            &session_service,
            realtime.as_ref(),
            config.streams.read_tokens_bound_to_sessions,
        );
    }
    let state = SessionsState::new(
        session_service,
        CacheService::new(stores.cache.clone(), sessions_config.clone()),
    );
    let mut served = vec!["sessions", "cache"];
    served.extend(streams.as_ref().map(|_| "streams"));
    served.extend(subscriptions.as_ref().map(|_| "stream-subscriptions"));
    served.extend(decider.as_ref().map(|_| "middleware"));
    served.extend(realtime.as_ref().map(|_| "realtime"));
    served.extend(
        config
            .compat
            .session_state
            .enabled
            .then_some("compat-session-state"),
    );
    served.extend(config.compat.state.enabled.then_some("compat-state"));
    let app = app::router(
        &config,
        &keys,
        stores.clone(),
        app::Capabilities {
            sessions: state,
            streams: streams.clone(),
            subscriptions: subscriptions.clone(),
            decider,
            realtime: realtime.clone().map(sessiond_realtime::router),
            users,
            security: security.as_ref().map(|w| w.events.clone()),
        },
        metrics,
    );

    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal.cancel();
    });
    let stopped = || stop.clone().cancelled_owned();
    let sweeper = tokio::spawn(sessiond_sessions::sweeper::run(
        stores.sessions.clone(),
        stores.cache.clone(),
        sessions_config,
        security.as_ref().map(|w| w.events.clone()),
        stopped(),
    ));
    let relay_task = security
        .as_ref()
        .map(|w| tokio::spawn(w.relay.clone().run(stopped())));

    let compactor = streams.clone().zip(cold_tier).map(|(streams, tier)| {
        // On a shared engine one node at a time compacts (the engine's sealing lease).
        let hold = stores.seal_lease.clone().map(|lease| {
            let ttl = Duration::from_millis(config.streams.cold.lease_ms);
            sessiond_streams::tier::SealHold::new(lease, ttl)
        });
        tokio::spawn(sessiond_streams::tier::run_compactor(
            streams,
            tier,
            config.streams.cold.policy(),
            hold,
            stopped(),
        ))
    });
    let subscription_task = subscriptions.map(|subs| tokio::spawn(subs.run(changes, stopped())));
    let metrics_stream = streams.clone().map(|streams| {
        tokio::spawn(sessiond_streams::metrics::run_system_stream(
            streams,
            stopped(),
        ))
    });
    let analytics_task = streams.clone().zip(analytics_rx).map(|(streams, rx)| {
        tokio::spawn(middleware::run_stream_sink(
            streams,
            config.middleware.analytics.stream.clone(),
            rx,
            stopped(),
        ))
    });
    let stream_sweeper =
        streams.map(|streams| tokio::spawn(sessiond_streams::sweeper::run(streams, stopped())));

    startup::announce(&config, addr, stores.admin.name(), &served);
    // The listener hands handlers the peer address (the realtime connection list shows it)
    // and enforces the connection caps and timeouts of `[http]`.
    let serve = listener::serve(
        listener,
        app,
        listener::Limits::from_config(&config.http),
        stop.clone(),
    );
    let grace = Duration::from_secs(config.http.shutdown_grace_s);
    tokio::select! {
        () = serve => {}
        _ = async { stopped().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_s = grace.as_secs(), "in-flight requests still running after the grace period; closing them");
        }
    }
    tracing::info!("draining background work");
    if let Some(hub) = &realtime {
        hub.shutdown(grace).await;
    }
    let _ = sweeper.await;
    if let Some(stream_sweeper) = stream_sweeper {
        let _ = stream_sweeper.await;
    }
    if let Some(subscription_task) = subscription_task {
        let _ = subscription_task.await;
    }
    for task in [compactor, metrics_stream, analytics_task, relay_task]
        .into_iter()
        .flatten()
    {
        let _ = task.await;
    }
    runtime.shutdown().await;
    stores.admin.close().await?;
    tracing::info!("sessiond stopped cleanly");
    Ok(())
}
