//! One security stream's share of a relay pass: its events, cut into runs of one outbox
//! queue's events (consecutive ones for a user's stream; all of the pass's for the global
//! stream, see `push_per_queue`), each run appended as ONE idempotent producer request.
//!
//! Why runs and an expected epoch: a request per event and stream made the relay cost about as
//! much as the session changes it records. A run is appended with producer
//! `sessiond-security-outbox:<queue>`, `Producer-Epoch` = the run's last outbox position and
//! `Producer-Seq: 0`, so the producer's epoch on a stream is always the position of the last
//! event of that queue the stream holds. Batch boundaries differ between passes, relays and
//! nodes, so "epoch above the current one" alone would let a run that starts below another
//! relay's last append through with events the stream has. Hence: skip every event at or below
//! the epoch the relay believes the stream holds, and append the rest only if the stream's
//! epoch is still that one (`ExpectedEpoch`, checked by the streams service under the
//! stream's lock and required by its commit). When another relay got ahead the refusal says
//! where it is; the relay skips what that covers and sends the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderValue, StatusCode};
use sessiond_sessions::security::GLOBAL_STREAM;
use sessiond_streams::append::{append_json_values, append_json_values_expecting};
use sessiond_streams::create::create_with_json_values;
use sessiond_streams::producer::{self, ExpectedEpoch};

use super::recent::Recent;
use super::relay::{Relay, RelayError};

/// The producer id of the relay's appends, before the outbox queue's name: every relay (on
/// every node) of one queue is the same producer, so the stream refuses what any of them
/// appended before.
const PRODUCER: &str = "sessiond-security-outbox:";
/// Streams remembered: between this many and twice as many, the most recently written (see
/// `recent.rs`).
const REMEMBERED: usize = 50_000;
/// Refusals of one run by relays getting ahead of it before the pass gives up (and retries).
const MAX_MOVES: usize = 32;

/// One queued event on its way to one stream.
pub(super) struct Event {
    /// `None`: the engine did not name the event's place (appended alone, without producer:
    /// at least once).
    pub position: Option<u64>,
    pub body: Vec<u8>,
}

/// Consecutive events of one queue for one stream, in queue order.
pub(super) struct Run {
    pub queue: String,
    pub events: Vec<Event>,
}

/// Adds `event` of `queue` to a stream's runs: to the last run when it is of the same queue,
/// so the stream keeps the pass's order (`at` across queues) and gets one request per stretch
/// of one queue's events (on one queue, SQLite: one per pass). An event without a position is
/// a run of its own.
pub(super) fn push(runs: &mut Vec<Run>, queue: &str, event: Event) {
    let last = (runs.last().map(|run| run.queue.as_str()) == Some(queue)).then(|| runs.len() - 1);
    add(runs, last, queue, event);
}

/// Adds `event` of `queue` to the latest run of `queue` wherever it is among `runs`: one
/// request per queue and pass instead of one per stretch. For a stream fed by many queues
/// (the global stream on Redis, one queue per slot) stretches are mostly single events, so
/// this is what keeps the relay ahead of the writes; the price is that the stream is ordered
/// by queue within a pass, not by `at` (each event carries its `at`). Each run still holds
/// its queue's events in queue order, and a queue's later run (after an event without a
/// position) comes after its earlier ones, so the epochs and the exactly-once argument above
/// are those of `push`.
pub(super) fn push_per_queue(runs: &mut Vec<Run>, queue: &str, event: Event) {
    let latest = runs.iter().rposition(|run| run.queue == queue);
    add(runs, latest, queue, event);
}

/// Adds `event` to `runs[into]` when both are named (positions: an idempotent request), else
/// as a run of its own at the end.
fn add(runs: &mut Vec<Run>, into: Option<usize>, queue: &str, event: Event) {
    let named = |e: &Event| e.position.is_some();
    if let Some(run) = into.and_then(|i| runs.get_mut(i)) {
        if named(&event) && run.events.iter().all(named) {
            run.events.push(event);
            return;
        }
    }
    runs.push(Run {
        queue: queue.to_string(),
        events: vec![event],
    });
}

/// What the relay knows of the streams it created or appended to: per stream, the epoch of
/// each of its producers as last seen (`None`: no row). A stream in the map exists (as far
/// as this process knows).
#[derive(Clone)]
pub(super) struct Known(Arc<Mutex<Recent<String, Epochs>>>);

impl Default for Known {
    fn default() -> Self {
        Known(Arc::new(Mutex::new(Recent::new(REMEMBERED))))
    }
}

/// One stream's producers and their epochs (`None`: no row).
type Epochs = HashMap<String, Option<u64>>;

impl Known {
    fn map(&self) -> std::sync::MutexGuard<'_, Recent<String, Epochs>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn exists(&self, stream: &str) -> bool {
        self.map().contains(stream)
    }

    /// Remembers that `stream` exists (just created: no producer rows).
    fn created(&self, stream: &str) {
        self.map().entry(stream, Epochs::default);
    }

    /// The epoch `producer` has on `stream`, as far as this relay knows. Unknown counts as no
    /// row: if the stream has one, the refusal names it.
    fn epoch(&self, stream: &str, producer: &str) -> Option<u64> {
        self.map()
            .get(stream)
            .and_then(|p| p.get(producer).copied())
            .flatten()
    }

    fn set_epoch(&self, stream: &str, producer: &str, epoch: Option<u64>) {
        self.map()
            .entry(stream, Epochs::default)
            .insert(producer.to_string(), epoch);
    }

    pub(super) fn forget(&self, stream: &str) {
        self.map().remove(stream);
    }
}

impl Relay {
    /// Appends `runs` to `stream`, in order. All but the last request are answered once
    /// queued (`Sessiond-Durability: unconfirmed`); the last is confirmed, and one stream's
    /// commits land in order, so its answer means every one of them is durable before the
    /// outbox forgets them.
    pub(super) async fn deliver(&self, stream: &str, runs: Vec<Run>) -> Result<(), RelayError> {
        let last = runs.len().saturating_sub(1);
        for (i, run) in runs.into_iter().enumerate() {
            self.append_run(stream, run, i == last).await?;
        }
        Ok(())
    }

    /// Appends the events of `run` that `stream` does not have, as one request (which creates
    /// the stream with them when this relay has not written to it yet).
    async fn append_run(&self, stream: &str, run: Run, confirmed: bool) -> Result<(), RelayError> {
        let failed = |source| RelayError::Stream {
            stream: stream.to_owned(),
            source,
        };
        let producer = format!("{PRODUCER}{}", run.queue);
        let named = run.events.iter().all(|e| e.position.is_some());
        let mut request = self.headers();
        if named {
            let id = HeaderValue::from_str(&producer)
                .map_err(|_| RelayError::QueueName(producer.clone()))?;
            request.insert(sessiond_streams::protocol::PRODUCER_ID, id);
            request.insert(sessiond_streams::protocol::PRODUCER_SEQ, 0.into());
        }
        if !confirmed {
            request.insert(
                "sessiond-durability",
                HeaderValue::from_static("unconfirmed"),
            );
        }
        let (mut recreated, mut moves) = (false, 0);
        loop {
            let held = named
                .then(|| self.known().epoch(stream, &producer))
                .flatten();
            let fresh: Vec<&Event> = run
                .events
                .iter()
                .filter(|e| match (held, e.position) {
                    (Some(held), Some(position)) => position > held,
                    _ => true,
                })
                .collect();
            let Some(last) = fresh.last() else {
                deduplicated(run.events.len());
                return Ok(());
            };
            let values: Vec<Vec<u8>> = fresh.iter().map(|e| e.body.clone()).collect();
            let streams = self.streams();
            requested(stream);
            let (epoch, expected) = (last.position.filter(|_| named), ExpectedEpoch(held));
            if let Some(epoch) = epoch {
                request.insert(sessiond_streams::protocol::PRODUCER_EPOCH, epoch.into());
            }
            let answer = if !self.known().exists(stream) {
                // Not written by this relay yet: created with the run and its producer row in
                // one engine write; if it exists, appended to on the next turn.
                let made = create_with_json_values(streams, stream, &request, values, expected);
                match made.await {
                    Ok(None) => {
                        self.known().created(stream);
                        continue;
                    }
                    Ok(Some(_)) => {
                        self.known().created(stream);
                        Ok(epoch)
                    }
                    Err(e) => Err(e),
                }
            } else if epoch.is_some() {
                append_json_values_expecting(streams, stream, &request, values, expected)
                    .await
                    .map(|_| epoch)
            } else {
                append_json_values(streams, stream, &request, values)
                    .await
                    .map(|_| None)
            };
            match answer {
                Ok(epoch) => {
                    if epoch.is_some() {
                        self.known().set_epoch(stream, &producer, epoch);
                    }
                    deduplicated(run.events.len() - fresh.len());
                    return Ok(());
                }
                // Another relay (or a pass before a crash) got ahead: skip what it covers.
                Err(e) if moves < MAX_MOVES && producer::moved_to(&e).is_some() => {
                    moves += 1;
                    self.known()
                        .set_epoch(stream, &producer, producer::moved_to(&e).flatten());
                }
                // Deleted meanwhile (an erasure, a sweep): create it again once.
                Err(e) if e.api.status == StatusCode::NOT_FOUND && !recreated => {
                    self.known().forget(stream);
                    recreated = true;
                }
                Err(e) => return Err(failed(e)),
            }
        }
    }
}

/// One append request sent (refused ones included): the relay's cost per pass, by stream kind.
fn requested(stream: &str) {
    let kind = if stream == GLOBAL_STREAM {
        "global"
    } else {
        "user"
    };
    metrics::counter!("sessiond_security_relay_requests_total", "stream" => kind).increment(1);
}

/// Copies the streams had already: not appended again.
fn deduplicated(copies: usize) {
    if copies > 0 {
        metrics::counter!("sessiond_security_events_deduplicated_total").increment(copies as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: Option<u64>) -> Event {
        Event {
            position,
            body: Vec::new(),
        }
    }

    /// Each run as (queue, positions).
    fn shape(runs: &[Run]) -> Vec<(&str, Vec<Option<u64>>)> {
        runs.iter()
            .map(|r| {
                (
                    r.queue.as_str(),
                    r.events.iter().map(|e| e.position).collect(),
                )
            })
            .collect()
    }

    /// Interleaved queues: `push` cuts a run at every change of queue, `push_per_queue` makes
    /// one run per queue; an event without a position stays alone and a queue's later events
    /// go after it, so each queue keeps its order in both.
    #[test]
    fn runs_per_stretch_and_per_queue() {
        let pass = [
            ("a", Some(1)),
            ("b", Some(1)),
            ("a", Some(2)),
            ("a", None),
            ("b", Some(2)),
            ("a", Some(4)),
        ];
        let (mut stretches, mut queues) = (Vec::new(), Vec::new());
        for (queue, position) in pass {
            push(&mut stretches, queue, event(position));
            push_per_queue(&mut queues, queue, event(position));
        }
        assert_eq!(shape(&stretches).len(), 6);
        assert_eq!(
            shape(&queues),
            vec![
                ("a", vec![Some(1), Some(2)]),
                ("b", vec![Some(1), Some(2)]),
                ("a", vec![None]),
                ("a", vec![Some(4)]),
            ]
        );
    }
}
