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
//! One commit of a stream is in the engine at a time. Appends decided while it is there are
//! **staged** ([`Staged`]) and sent together as the next commit when it lands: a busy stream
//! then costs one tail check, one metadata write, one engine command and one reader wake-up
//! per batch, not per append (the engine's group commit already shared the fsync; this shares
//! the rest). A driver lands the commits one after the other, publishing each outcome before
//! answering its appends, so the durable tail and the store's observers (subscriptions) see
//! appends in log order. The append that sent a stream's commit lands that first one itself
//! (no task, no extra wake-up: the common case with many streams and few appends each); what
//! was staged meanwhile, or the commit of a request dropped while waiting (a client that
//! disconnected), goes on in a driver task, so nothing is left in flight forever. If a commit fails, its successors fail their tail check too; the object
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

use std::sync::{Arc, Mutex, PoisonError};

use sessiond_store::{
    Commit, CommitTicket, Durability, Millis, ProducerUpdate, StoreError, StreamChunk, StreamMeta,
    StreamStore,
};
use tokio::sync::{oneshot, watch};

use crate::cold::SharedChunk;
use crate::error::{StreamError, StreamResult};
use crate::recent::Recent;
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

    /// Enqueues the append `chunks` + `info` after `expected_tail` under the lock (or stages
    /// it behind the stream's commit in the engine), releases the lock, and returns once the
    /// commit is durable, or at once for `Durability::Unconfirmed` (readers see it only once
    /// durable either way). `chunks` must not be empty; the caller made every check against
    /// the assigned state.
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
        // Most appends change only the tail: keep the stored encoding of the rest.
        let unchanged = crate::service::stream(&g)
            .filter(|s| s.info == info)
            .map(|s| s.stored_state.clone());
        let (meta, stored_state) = match unchanged {
            Some(state) => (Stream::meta(g.key(), tail, &info, state.to_vec()), state),
            None => {
                let meta = Stream::encode(g.key(), tail, &info)?;
                let state = meta.state.as_slice().into();
                (meta, state)
            }
        };
        let expires_at = meta.expires_at;
        let Some(object) = g.state() else {
            return Err(StreamError::busy("stream object vanished"));
        };
        let (flight, changed, staged, recent) = (
            object.flight.clone(),
            object.changed.clone(),
            Arc::clone(&object.staged),
            Arc::clone(&object.recent),
        );
        // Counted before it can be staged: the driver may land it as soon as it is.
        flight.send_if_modified(|f| {
            if f.in_flight == 0 {
                f.durable_tail = expected_tail;
            }
            f.in_flight += 1;
            false // nobody waits for more to be in flight
        });
        let (reply, outcome) = oneshot::channel();
        // Holds the driver of a commit this append sends: dropped unlanded (an early return
        // below, an unconfirmed append, a dropped request), it hands the commit to a task.
        let mut landing = Landing(None);
        let direct = {
            let mut s = staged.lock().unwrap_or_else(PoisonError::into_inner);
            if s.active {
                s.stage(expected_tail, chunks, meta, producers, reply, kept);
                None
            } else {
                s.active = true;
                Some((chunks, meta, producers, reply, kept))
            }
        };
        if let Some((chunks, meta, producers, reply, kept)) = direct {
            let enqueued = self
                .store
                .commit_enqueue(
                    g.key(),
                    expected_tail,
                    chunks,
                    meta,
                    producers,
                    Durability::Confirmed,
                )
                .await;
            let ticket = match enqueued {
                Ok(ticket) => ticket,
                Err(e) => {
                    // Nothing was staged meanwhile (staging needs the lock we hold).
                    staged.lock().unwrap_or_else(PoisonError::into_inner).active = false;
                    flight.send_modify(|f| f.in_flight -= 1);
                    return Err(e.into());
                }
            };
            landing = Landing(Some(Driver {
                store: Arc::clone(&self.store),
                path: g.key().to_owned(),
                staged,
                flight,
                changed,
                ticket,
                replies: vec![reply],
                tail,
                fanout: Fanout {
                    recent,
                    created_at,
                    budget,
                    kept,
                },
            }));
        }
        let Some(object) = g.state_mut() else {
            return Err(StreamError::busy("stream object vanished"));
        };
        object.producers.extend(written);
        let retained = object.stream.as_ref().map_or(0, |s| s.retained);
        object.stream = Some(Stream {
            tail,
            retained,
            info,
            persisted_expiry: expires_at,
            stored_state,
        });
        drop(g);

        if durability == Durability::Unconfirmed {
            // Its place in the log is fixed; a failure or a crash may still lose it. (The
            // landing's drop sends its commit on in a task.)
            return Ok(());
        }
        landing.land().await;
        match outcome.await {
            Ok(Ok(Commit::Written)) => Ok(()),
            Ok(Ok(Commit::Conflict)) => Err(failed_earlier()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StreamError::busy("the append's completion was lost; retry")),
        }
    }
}

/// The answer each append of a commit gets.
type Reply = oneshot::Sender<sessiond_store::Result<Commit>>;

/// Appends of one stream decided while a commit of it is in the engine: they wait here and
/// go to the engine as ONE commit when it lands, so a busy stream costs one tail check,
/// one metadata write, one engine command and one wake-up per batch instead of per append.
#[derive(Default)]
pub struct Staged {
    /// A commit of this stream is in the engine; its driver takes what is staged.
    active: bool,
    /// Where the first staged chunk starts.
    from: u64,
    chunks: Vec<StreamChunk>,
    /// The metadata after the last staged append.
    meta: Option<StreamMeta>,
    producers: ProducerUpdate,
    replies: Vec<Reply>,
    /// The tail after the last staged append.
    tail: u64,
    /// Copies of the staged chunks for the readers (`recent.rs`); `None` once one of them
    /// was not kept.
    kept: Option<Vec<SharedChunk>>,
}

impl Staged {
    fn stage(
        &mut self,
        expected_tail: u64,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
        reply: Reply,
        kept: Option<Vec<SharedChunk>>,
    ) {
        if self.replies.is_empty() {
            self.from = expected_tail;
            self.kept = Some(Vec::new());
        }
        self.kept = match (self.kept.take(), kept) {
            (Some(mut all), Some(more)) => {
                all.extend(more);
                Some(all)
            }
            _ => None,
        };
        self.tail = meta.tail;
        self.meta = Some(meta);
        self.chunks.extend(chunks);
        // A later state of a producer replaces an earlier one of the same batch.
        for record in producers.upsert {
            match self.producers.upsert.iter_mut().find(|r| r.id == record.id) {
                Some(r) => *r = record,
                None => self.producers.upsert.push(record),
            }
        }
        self.producers.max_producers = producers.max_producers;
        self.replies.push(reply);
    }
}

/// What a driver task owns: the stream's commit in the engine and who waits for it.
struct Driver {
    store: Arc<dyn StreamStore>,
    path: String,
    staged: Arc<Mutex<Staged>>,
    flight: watch::Sender<Flight>,
    changed: crate::wakes::WakeSender,
    ticket: CommitTicket,
    replies: Vec<Reply>,
    tail: u64,
    fanout: Fanout,
}

/// What the readers waiting at the tail learn when a commit lands (`recent.rs`).
struct Fanout {
    recent: Arc<Recent>,
    /// The stream's incarnation (a delete settles first, so every commit of one driver
    /// belongs to it).
    created_at: Millis,
    budget: usize,
    /// Copies of the landing commit's chunks, if kept.
    kept: Option<Vec<SharedChunk>>,
}

/// Lands the stream's commits one after the other until nothing is staged: publishes each
/// outcome (durable tail, wake-up) before answering its appends, then sends what was staged
/// meanwhile as the next commit. Runs in its own task, so a client that disconnects cannot
/// leave a commit in flight forever; one driver per stream at a time keeps outcomes in log
/// order.
async fn drive(mut d: Driver) {
    loop {
        let result = (&mut d.ticket).await;
        let Some(next) = d.landed(result) else {
            return;
        };
        d.send(next).await;
    }
}

/// The first commit of a driver, landed by the append that sent it: when appends to a stream
/// do not overlap (many streams, few appends each) that saves a task and a wake-up per
/// append. Only the landing is awaited here: what was staged meanwhile goes on in a task
/// (this append's reply does not wait for later commits), and if the request is dropped
/// while waiting (the client went away) the drop hands the commit to a task, as if it had
/// been spawned at once.
struct Landing(Option<Driver>);

impl Landing {
    async fn land(mut self) {
        let Some(d) = self.0.as_mut() else {
            return;
        };
        let result = (&mut d.ticket).await;
        // Landed: from here on nothing awaits, so the drop below spawns nothing.
        let Some(mut d) = self.0.take() else {
            return;
        };
        if let Some(next) = d.landed(result) {
            tokio::spawn(async move {
                d.send(next).await;
                drive(d).await;
            });
        }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        // Outside a runtime (the process is ending) there is nobody left to answer.
        if let (Some(d), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(drive(d));
        }
    }
}

impl Driver {
    /// Publishes the outcome of the commit that landed and answers its appends; what was
    /// staged meanwhile, which this driver must send next (`None`: nothing, the stream's
    /// commit slot is free again).
    fn landed(&mut self, result: sessiond_store::Result<Commit>) -> Option<Staged> {
        let written = matches!(result, Ok(Commit::Written));
        let landed = self.replies.len() as u64;
        let tail = self.tail;
        self.flight.send_modify(|f| {
            f.in_flight -= landed;
            if written {
                f.durable_tail = f.durable_tail.max(tail);
            } else {
                f.failed = true;
            }
        });
        let kept = self.fanout.kept.take();
        if written {
            let f = &self.fanout;
            f.recent.publish(f.created_at, tail, kept, f.budget);
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
        for reply in self.replies.drain(..) {
            let _ = reply.send(copy(&result));
        }
        let mut s = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
        if s.replies.is_empty() {
            s.active = false;
            return None;
        }
        // Still active: the next commit is this driver's to send.
        let next = std::mem::take(&mut *s);
        s.active = true;
        Some(next)
    }

    /// Sends what was staged as the stream's next commit.
    async fn send(&mut self, next: Staged) {
        let Some(meta) = next.meta else {
            // Unreachable (every staged append set it); answered as a lost commit.
            self.ticket = Box::pin(std::future::ready(Ok(Commit::Conflict)));
            self.replies = next.replies;
            return;
        };
        // Even after a failure: the engine's tail check refuses what followed it, and what
        // was staged after the stream was reloaded is checked against the stored tail.
        self.ticket = match self
            .store
            .commit_enqueue(
                &self.path,
                next.from,
                next.chunks,
                meta,
                next.producers,
                Durability::Confirmed,
            )
            .await
        {
            Ok(ticket) => ticket,
            Err(e) => Box::pin(std::future::ready(Err(e))),
        };
        self.replies = next.replies;
        self.tail = next.tail;
        self.fanout.kept = next.kept;
    }
}

/// `StoreError` is not `Clone`; every append of a failed commit gets the same error.
fn copy(result: &sessiond_store::Result<Commit>) -> sessiond_store::Result<Commit> {
    match result {
        Ok(c) => Ok(*c),
        Err(StoreError::Unavailable(m)) => Err(StoreError::Unavailable(m.clone())),
        Err(StoreError::Corrupt(m)) => Err(StoreError::Corrupt(m.clone())),
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
