//! Pipelined appends: many appends to one stream share one engine commit.
//!
//! Holding the stream's lock until each commit is durable made appends to one stream one
//! fsync each. Instead an append is decided under the lock (checks against the *assigned*
//! state, offsets from the assigned tail), **enqueued** to the engine (which fixes its order,
//! see `StreamStore::commit_enqueue`), the assigned state updated, and the lock released; the
//! durability wait happens outside the lock, so the next append can be enqueued meanwhile and
//! the engine's group commit folds them into one transaction.
//!
//! Readers must never see bytes that are not durable: while commits are in flight they see
//! the [`Flight::durable_tail`], advanced (monotonically, commits being applied in order) by
//! each commit's completion, which also wakes waiting readers. A reply is sent only after its
//! own commit is durable.
//!
//! The completion runs in a spawned task, so a client that disconnects cannot leave a commit
//! in flight forever. Completions of one stream publish in enqueue order (each waits for its
//! predecessor's), so the durable tail and the store's observers (subscriptions) see appends
//! in log order. If a commit fails, its successors fail their tail check too; the object
//! is marked [`Flight::failed`], every one of them answers 503, and the next lock waits for the
//! flight to land and reloads the stream from the engine.
//!
//! `Sessiond-Durability: unconfirmed` changes only when the *writer* is answered: its append
//! is enqueued like any other and answered as soon as its place in the log is fixed, while
//! readers still see it only once it is durable. A crash can lose an unconfirmed append, but
//! no reader can have seen it, so its offset being reused by other bytes afterwards is not a
//! change any reader can observe.
//!
//! Everything that is not a plain append (close, delete, fork, expiry, TTL refresh, a
//! producer's duplicate) first [`settle`](Streams::settle)s: waits, under the lock, until
//! nothing is in flight, so it is ordered after every pending append and sees only durable
//! state.

use sessiond_store::{Commit, Durability, StreamChunk};
use tokio::sync::oneshot;

use crate::error::{StreamError, StreamResult};
use crate::service::{Guard, Streams};
use crate::state::{Flight, Stream, StreamInfo, StreamObject};

/// The 503 of an append that was queued behind one that failed.
fn failed_earlier() -> StreamError {
    StreamError::busy("an earlier append to this stream failed to commit; retry")
}

impl Streams {
    /// Waits until no append of the locked stream is in flight. Err (503) if one failed; the
    /// next lock reloads the stream.
    pub async fn settle(&self, g: &mut Guard) -> StreamResult<()> {
        let Some(object) = g.state() else {
            return Ok(());
        };
        if wait_landed(object).await?.failed {
            return Err(failed_earlier());
        }
        Ok(())
    }

    /// Called by `lock`: if an append failed, waits for the flight to land, clears it and
    /// says the stream must be reloaded from the engine.
    pub(crate) async fn heal(&self, g: &mut Guard) -> StreamResult<bool> {
        let Some(object) = g.state() else {
            return Ok(false);
        };
        if !object.flight.borrow().failed {
            return Ok(false);
        }
        wait_landed(object).await?;
        object.flight.send_replace(Flight::default());
        Ok(true)
    }

    /// True when appends may be pipelined: this process is the engine's only writer (else
    /// every lock reloads the stream and would forget the assigned state).
    pub(crate) fn pipelines(&self) -> bool {
        self.exclusive
    }

    /// Enqueues the append `chunks` + `info` after `expected_tail` under the lock, releases the
    /// lock, and returns once the commit is durable, or at once for `Durability::Unconfirmed`
    /// (readers see it only once durable either way). `chunks` must not be empty; the caller
    /// made every check against the assigned state.
    pub async fn commit_pipelined(
        &self,
        mut g: Guard,
        expected_tail: u64,
        chunks: Vec<StreamChunk>,
        mut info: StreamInfo,
        durability: Durability,
    ) -> StreamResult<()> {
        let (producers, written) = self.producer_update(&mut info);
        let tail = chunks.last().map_or(expected_tail, StreamChunk::end);
        // For the readers waiting at the tail (`recent.rs`): only while there are some.
        let budget = self.config.fanout_cache_bytes;
        let kept = g
            .state()
            .filter(|o| o.changed.receiver_count() > 0)
            .and_then(|_| crate::recent::keep(&chunks, budget));
        let created_at = info.created_at;
        let meta = Stream::encode(g.key(), tail, &info)?;
        let expires_at = meta.expires_at;
        let stored_state = meta.state.as_slice().into();
        let ticket = self
            .store
            .commit_enqueue(
                g.key(),
                expected_tail,
                chunks,
                meta,
                producers,
                Durability::Confirmed,
            )
            .await?;
        let Some(object) = g.state_mut() else {
            return Err(StreamError::busy("stream object vanished"));
        };
        object.flight.send_if_modified(|f| {
            if f.in_flight == 0 {
                f.durable_tail = expected_tail;
            }
            f.in_flight += 1;
            false // nobody waits for more to be in flight
        });
        object.producers.extend(written);
        let retained = object.stream.as_ref().map_or(0, |s| s.retained);
        object.stream = Some(Stream {
            tail,
            retained,
            info,
            persisted_expiry: expires_at,
            stored_state,
        });
        let (flight, changed) = (object.flight.clone(), object.changed.clone());
        let recent = object.recent.clone();
        let (done, next_done) = oneshot::channel();
        let previous = object.last_done.replace(next_done);
        drop(g);

        let (reply, outcome) = oneshot::channel();
        tokio::spawn(async move {
            // In enqueue order (costs nothing: the engine answers in that order anyway).
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let result = ticket.await;
            let written = matches!(result, Ok(Commit::Written));
            flight.send_modify(|f| {
                f.in_flight -= 1;
                if written {
                    f.durable_tail = f.durable_tail.max(tail);
                } else {
                    f.failed = true;
                }
            });
            if written {
                recent.publish(created_at, tail, kept, budget);
                changed.send_modify(|v| *v = v.wrapping_add(1));
            }
            let _ = done.send(());
            let _ = reply.send(result);
        });
        if durability == Durability::Unconfirmed {
            // Its place in the log is fixed; a failure or a crash may still lose it.
            return Ok(());
        }
        match outcome.await {
            Ok(Ok(Commit::Written)) => Ok(()),
            Ok(Ok(Commit::Conflict)) => Err(failed_earlier()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StreamError::busy("the append's completion was lost; retry")),
        }
    }
}

/// Waits (holding the lock, so nothing new is enqueued) until nothing is in flight.
async fn wait_landed(object: &StreamObject) -> StreamResult<Flight> {
    let mut flight = object.flight.subscribe();
    let landed = flight
        .wait_for(|f| f.in_flight == 0)
        .await
        .map_err(|_| StreamError::busy("stream object vanished"))?;
    Ok(*landed)
}
