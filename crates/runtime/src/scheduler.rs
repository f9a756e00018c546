//! The alarm scheduler: one task that sleeps until the earliest alarm and fires what is due.
//!
//! Loop: read due alarms, claim and fire each, read the earliest remaining due time, then sleep
//! until it (capped by `alarm_poll_max`, so alarms written by another node or a lost wake-up
//! are still seen), waking early when [`Alarms::set`](crate::Alarms::set) notifies. The wake-up
//! is local: on several nodes the one that set an alarm fires it on time, and the others find
//! it at their next poll, which matters when that node died (then the alarm fires at most one
//! poll interval late) or when its handler failed and the retry is claimed elsewhere. State lives
//! only in the store, so a fresh runtime on the same store picks up where a stopped one left.
//!
//! At-least-once delivery:
//! - **Claim.** Before firing, the alarm is moved to `now + alarm_claim_lease`. The scheduler
//!   will not see it again during the lease, and if the process dies mid-handler the alarm is
//!   simply due again when the lease ends, and whichever node polls first fires it. The claim
//!   is one atomic compare-and-set on the observed `due_at` (`ObjectStore::reschedule_alarm`),
//!   so of several nodes reading the same due alarm only one claims it, an alarm re-set in the
//!   meantime is left alone, and no crash can lose an alarm between two writes.
//! - **Renew.** Every third of a lease while the handler runs, the claim is pushed one lease
//!   further (the same compare-and-set), so a handler slower than the lease is not fired again
//!   concurrently on another node. Only a node that stalls for a whole lease (or loses the
//!   store for that long) can see its claim taken over while its handler still runs.
//! - **Complete.** On success the alarm is deleted only if it still carries the claimed
//!   `due_at`, so a handler that re-armed the same alarm keeps its new one.
//! - **Retry.** On failure the claimed record is replaced (same compare-and-set) by one due
//!   after `base * 2^(failures-1)` with `attempt` incremented; after `alarm_max_attempts` tries
//!   it is dropped with a warning. An alarm of a kind without a handler fails the same way,
//!   so it is retried a few times (a handler may be registered by a newer deploy) and then
//!   dropped rather than spinning.
//!
//! Each fire runs in its own task (tracked, so shutdown can wait for it); the handler itself
//! runs in a nested task so a panic counts as a failure instead of leaving the claim to expire.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sessiond_store::{now_ms, AlarmRecord, Durability, Millis, ObjectStore, StoreError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alarms::{AlarmError, AlarmHandler};
use crate::config::RuntimeConfig;

/// Handlers by kind name.
pub(crate) type Handlers = HashMap<String, Arc<dyn AlarmHandler>>;

pub(crate) struct Scheduler {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) notify: Arc<Notify>,
    pub(crate) handlers: Handlers,
    pub(crate) config: RuntimeConfig,
    /// Stops the loop.
    pub(crate) cancel: CancellationToken,
    /// Abandons in-flight handlers (forced shutdown); their alarms refire after the lease.
    pub(crate) abort: CancellationToken,
    /// In-flight fire tasks.
    pub(crate) tracker: TaskTracker,
}

fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

impl Scheduler {
    pub(crate) async fn run(self: Arc<Self>) {
        tracing::debug!(kinds = self.handlers.len(), "alarm scheduler started");
        loop {
            let wait = match self.pass().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "alarm scheduler: store error; retrying");
                    self.config.alarm_poll_max
                }
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep_until(Instant::now() + wait) => {}
            }
        }
        tracing::debug!("alarm scheduler stopped");
    }

    /// Fires everything due; returns how long to sleep before the next pass.
    async fn pass(self: &Arc<Self>) -> Result<Duration, StoreError> {
        let batch = self.config.alarm_batch.max(1);
        loop {
            if self.cancel.is_cancelled() {
                return Ok(Duration::ZERO);
            }
            let due = self.store.due_alarms(now_ms(), batch).await?;
            let full = due.len() >= batch;
            for alarm in due {
                self.claim_and_fire(alarm).await?;
            }
            if !full {
                break;
            }
        }
        let next = self.store.next_alarm_at().await?;
        let poll_max = self.config.alarm_poll_max;
        Ok(match next {
            None => poll_max,
            Some(at) => {
                let ms = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                // A floor of 1 ms keeps a pathological store (an alarm due but never returned
                // by `due_alarms`) from turning the loop into a busy spin.
                Duration::from_millis(ms).clamp(Duration::from_millis(1), poll_max)
            }
        })
    }

    async fn claim_and_fire(self: &Arc<Self>, alarm: AlarmRecord) -> Result<(), StoreError> {
        let claimed = AlarmRecord {
            due_at: now_ms().saturating_add(millis(self.config.alarm_claim_lease)),
            ..alarm.clone()
        };
        if !replace_if_due(&*self.store, alarm.due_at, &claimed).await? {
            // Re-set, cancelled or claimed by another node since we read it.
            return Ok(());
        }
        let this = self.clone();
        self.tracker.spawn(async move { this.fire(claimed).await });
        Ok(())
    }

    async fn fire(self: Arc<Self>, mut alarm: AlarmRecord) {
        let kind = alarm.kind.clone();
        let result = match self.handlers.get(&alarm.kind) {
            None => Err(AlarmError::NoHandler(kind.clone())),
            Some(handler) => {
                metrics::counter!("sessiond_alarm_fires_total", "kind" => kind.clone())
                    .increment(1);
                let handler = handler.clone();
                let a = alarm.clone();
                let mut task =
                    tokio::spawn(async move { handler.fire(&a.key, &a.name, &a.payload).await });
                let mut renew = true;
                loop {
                    let renew_at = Instant::now()
                        + (self.config.alarm_claim_lease / 3).max(Duration::from_millis(1));
                    tokio::select! {
                        r = &mut task => break r.unwrap_or_else(|e| Err(AlarmError::Panicked(e))),
                        _ = self.abort.cancelled() => {
                            task.abort();
                            tracing::info!(kind, key = %alarm.key, name = %alarm.name,
                                "alarm handler abandoned at shutdown; it refires after its lease");
                            return;
                        }
                        _ = tokio::time::sleep_until(renew_at), if renew => {
                            renew = self.renew(&mut alarm).await;
                        }
                    }
                }
            }
        };
        if let Err(e) = self.settle(&alarm, result).await {
            tracing::warn!(kind, key = %alarm.key, name = %alarm.name, error = %e,
                "could not record alarm outcome; it refires after its lease");
        }
    }

    /// Extends the claim on `alarm` (a running handler) by one lease, so a handler slower than
    /// the lease is not fired a second time by another node meanwhile. Returns whether to keep
    /// renewing: false once the claim is no longer ours (the handler re-armed or cancelled the
    /// alarm, or, after a stall longer than the lease, another node claimed it).
    async fn renew(&self, alarm: &mut AlarmRecord) -> bool {
        let extended = AlarmRecord {
            due_at: now_ms().saturating_add(millis(self.config.alarm_claim_lease)),
            ..alarm.clone()
        };
        match replace_if_due(&*self.store, alarm.due_at, &extended).await {
            Ok(true) => {
                alarm.due_at = extended.due_at;
                true
            }
            Ok(false) => {
                tracing::debug!(kind = %alarm.kind, key = %alarm.key, name = %alarm.name,
                    "alarm claim changed while its handler runs; no longer renewing it");
                false
            }
            Err(e) => {
                // The lease may lapse if the store stays away; the next tick tries again.
                tracing::warn!(kind = %alarm.kind, key = %alarm.key, name = %alarm.name,
                    error = %e, "could not renew an alarm claim");
                true
            }
        }
    }

    /// Records the outcome of one try of the claimed `alarm`.
    async fn settle(
        &self,
        alarm: &AlarmRecord,
        result: Result<(), AlarmError>,
    ) -> Result<(), StoreError> {
        let (kind, key, name) = (&alarm.kind, &alarm.key, &alarm.name);
        let error = match result {
            Ok(()) => {
                self.store
                    .delete_alarm(kind, key, name, Some(alarm.due_at), Durability::Confirmed)
                    .await?;
                return Ok(());
            }
            Err(error) => error,
        };
        let failures = alarm.attempt.saturating_add(1);
        if failures >= self.config.alarm_max_attempts {
            tracing::warn!(kind = %kind, key = %key, name = %name, attempts = failures, error = %error,
                "alarm failed too many times; dropping it");
            metrics::counter!("sessiond_alarm_failures_total", "kind" => kind.clone()).increment(1);
            self.store
                .delete_alarm(kind, key, name, Some(alarm.due_at), Durability::Confirmed)
                .await?;
            return Ok(());
        }
        let delay = self.config.backoff(failures);
        tracing::info!(kind = %kind, key = %key, name = %name, attempt = failures, error = %error,
            retry_in_ms = delay.as_millis() as u64, "alarm handler failed; retrying");
        metrics::counter!("sessiond_alarm_retries_total", "kind" => kind.clone()).increment(1);
        let retry = AlarmRecord {
            due_at: now_ms().saturating_add(millis(delay)),
            attempt: failures,
            ..alarm.clone()
        };
        // If the handler re-armed the alarm before failing, its new alarm wins.
        if replace_if_due(&*self.store, alarm.due_at, &retry).await? {
            self.notify.notify_one();
        }
        Ok(())
    }
}

/// Replaces the alarm named by `record` with `record` if it is still due at `expected_due`,
/// in one atomic store operation (so a crash cannot lose the alarm between two writes).
/// Returns false (writing nothing) if it changed or vanished.
async fn replace_if_due(
    store: &dyn ObjectStore,
    expected_due: Millis,
    record: &AlarmRecord,
) -> Result<bool, StoreError> {
    store
        .reschedule_alarm(record, expected_due, Durability::Confirmed)
        .await
}
