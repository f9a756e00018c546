//! Wiring of Durable Streams: the service over the engine's stream store, its cold tier, the
//! `__ds` subscriptions that observe every write, and their background tasks.
//!
//! Everything that can fail (the cold tier's storage, reading the subscription records) is
//! done here before any task starts, so a server that cannot start leaves nothing running.
//! Subscriptions are opened against the runtime builder's alarm service: their lease and
//! retry timers are runtime alarms (any node takes over a dead node's), and the scheduler
//! fires whatever came due once the runtime starts.

use std::sync::Arc;
use std::time::Duration;

use sessiond_runtime::RuntimeBuilder;
use sessiond_streams::subscriptions::{self, Subscriptions};
use sessiond_streams::{tier, ColdReader, NoCold, SegmentsCold, Streams};

use crate::config::EngineKind;
use crate::supervisor::Task;
use crate::Wiring;

/// The streams capability as the server serves it.
pub struct Wired {
    /// The service (its routes are assembled in [`crate::app`]).
    pub streams: Streams,
    /// The reserved `__ds` subscription APIs.
    pub subscriptions: Subscriptions,
    /// The sweeper, compactor, subscription and metrics-stream tasks.
    pub tasks: Vec<Task>,
}

/// Builds the streams capability when the engine stores streams (`None` otherwise).
pub async fn wire(
    wiring: &Wiring<'_>,
    runtime: &mut RuntimeBuilder,
) -> anyhow::Result<Option<Wired>> {
    let Wiring {
        config,
        stores,
        supervisor,
    } = *wiring;
    let Some(store) = stores.streams.clone() else {
        return Ok(None);
    };
    // The cold tier: sealed segments in object storage, unless disabled.
    let cold_tier = config
        .streams
        .cold
        .open(&config.data_dir, config.engine == EngineKind::Memory)
        .map_err(|e| anyhow::anyhow!("cannot open the streams cold tier: {e}"))?;
    // Subscriptions see every stream write through an observing store wrapper and keep their
    // records in the object runtime.
    let (observer, changes) = subscriptions::observer(config.streams.subscriptions.observer_queue);
    let subscription_kind =
        runtime.persistent_kind(subscriptions::KIND, sessiond_runtime::JsonCodec);
    let subscription_alarms = subscriptions::AlarmTarget::default();
    runtime.alarm_handler(subscriptions::KIND, subscription_alarms.clone());
    let cold: Arc<dyn ColdReader> = match &cold_tier {
        Some(tier) => Arc::new(SegmentsCold::new(tier.clone(), store.clone())),
        None => Arc::new(NoCold),
    };
    // One in-memory object per stream path: metadata cache and wake-ups.
    let streams = Streams::new(
        observer.wrap(store),
        cold,
        runtime.kind("stream"),
        config.streams.clone(),
        stores.admin.exclusive(),
    )
    .with_shutdown(supervisor.token());
    // On a shared engine, readers also wake for appends made by other nodes.
    if let Some(wakes) = &stores.stream_wakes {
        streams.listen(wakes.as_ref());
    }
    let subs = Subscriptions::open(
        streams.clone(),
        subscription_kind,
        stores.objects.clone(),
        observer,
        runtime.alarms(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open stream subscriptions: {e}"))?;
    subscription_alarms.bind(&subs);

    let mut tasks = vec![
        Task::new(
            "streams-sweeper",
            sessiond_streams::sweeper::run(streams.clone(), supervisor.stopped()),
        ),
        Task::new(
            "stream-subscriptions",
            subs.clone().run(changes, supervisor.stopped()),
        ),
        // Ends at once when no metrics stream is configured.
        Task::new(
            "streams-metrics-stream",
            sessiond_streams::metrics_stream::run_system_stream(
                streams.clone(),
                supervisor.stopped(),
            ),
        ),
    ];
    if let Some(tier) = cold_tier {
        // On a shared engine one node at a time compacts (the engine's sealing lease).
        let hold = stores.seal_lease.clone().map(|lease| {
            let ttl = Duration::from_millis(config.streams.cold.lease_ms);
            tier::SealHold::new(lease, ttl)
        });
        tasks.push(Task::new(
            "streams-compactor",
            tier::run_compactor(
                streams.clone(),
                tier,
                config.streams.cold.policy(),
                hold,
                supervisor.stopped(),
            ),
        ));
    }
    Ok(Some(Wired {
        streams,
        subscriptions: subs,
        tasks,
    }))
}
