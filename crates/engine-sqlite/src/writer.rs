//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and a commit's cost is dominated by the fsync, not by
//! the rows. So one thread owns the only read-write connection and turns whatever writes are
//! waiting into one transaction:
//!
//! 1. block for the first command on the channel, then drain every other pending command
//!    (up to `max_batch`) without blocking;
//! 2. `BEGIN IMMEDIATE`, run each command inside its own `SAVEPOINT` (a failing command rolls
//!    back to it and reports its own error without aborting the others), `COMMIT`;
//! 3. answer the `Durability::Unconfirmed` callers (their write is visible to readers now);
//! 4. `fdatasync` the WAL file: one fsync for the whole batch (see `schema.rs` for why this
//!    makes the batch durable under `synchronous=NORMAL`);
//! 5. answer the `Durability::Confirmed` callers: a batch of several through one task of the
//!    runtime that opened the engine ([`Answers`]), so the thread wakes one task per batch,
//!    not one per caller.
//!
//! Commands are closures over the connection, so read-then-write logic (compare-and-set, the
//! cache namespace limit, guarded deletes) runs inside the writer's transaction and is atomic
//! without any locking elsewhere. Results travel back through a tokio oneshot per command.
//! Stream commits also get the thread's [`WriterState`]: statements prepared once, and the
//! stream tails (their rows' ids and tails, so a compare-and-set need not read the row), which
//! every other command makes it forget.
//!
//! A batch of one command (the common case of one busy stream, whose appends are staged into
//! one command per commit) runs without a savepoint: if it fails, the transaction itself is
//! rolled back, which undoes exactly the same thing. So does a batch of [`Again`] commands
//! only (stream commits, which can run again): in the rare case that one fails, the
//! transaction is rolled back and the batch runs again with a savepoint per command. A
//! savepoint costs its two statements and a copy of every page it touches into the statement
//! journal.
//!
//! If an fsync fails, the kernel may already have dropped the dirty pages it could not write,
//! so a later successful fsync would prove nothing: the writer then refuses every further
//! command (`Unavailable`) until the process reopens the database, which replays the WAL.
//!
//! Closing drops the channel's sender; the thread finishes every command already queued,
//! checkpoints the WAL into the database (`TRUNCATE`), closes the connection and exits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;
use sessiond_store::{Durability, Result, StoreError};
use tokio::sync::oneshot;

use crate::error::{closed, io, sql};
use crate::hot::WriterState;

/// Counters of the writer since open, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Committed transactions (batches).
    pub commits: u64,
    /// Write commands those transactions carried.
    pub writes: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
}

/// The commit series, looked up in the metrics recorder once per writer thread: each
/// `counter!`/`histogram!` looks its key up (hashing name and label), about 1.0 k instructions
/// a commit for these three, which is per append when each append is its own commit. The
/// server installs its recorder before it opens the engine (`sessiond::Server::wire`).
struct CommitMetrics {
    commits: metrics::Counter,
    batch_size: metrics::Histogram,
    seconds: metrics::Histogram,
}

impl CommitMetrics {
    fn new() -> CommitMetrics {
        CommitMetrics {
            commits: metrics::counter!("sessiond_engine_commits_total", "engine" => "sqlite"),
            batch_size: metrics::histogram!("sessiond_engine_commit_batch_size", "engine" => "sqlite"),
            seconds: metrics::histogram!("sessiond_engine_commit_seconds", "engine" => "sqlite"),
        }
    }
}

/// One queued write: runs inside the batch transaction, then answers its caller.
trait Command: Send {
    fn durability(&self) -> Durability;
    /// Runs the work; true if it succeeded (false: roll back to its savepoint).
    fn run(&mut self, conn: &Connection, state: &mut WriterState<'_>) -> bool;
    /// Whether `run` may be called again once what it did was rolled back.
    fn repeatable(&self) -> bool;
    /// Answers the caller. `batch` is the fate of the whole transaction (and, for confirmed
    /// writes, of the fsync); when it is `Ok`, the command's own result is sent.
    fn answer(self: Box<Self>, batch: Result<()>);
}

/// A command's work: `None` when it cannot run (again).
pub(crate) trait Work<T>: Send {
    fn call(
        &mut self,
        conn: &Connection,
        state: &mut WriterState<'_>,
    ) -> Option<rusqlite::Result<T>>;
    fn repeatable(&self) -> bool;
}

/// Work that runs once (it may move what it captured).
pub(crate) struct Once<F>(pub(crate) Option<F>);

impl<T, F> Work<T> for Once<F>
where
    F: FnOnce(&Connection, &mut WriterState<'_>) -> rusqlite::Result<T> + Send,
{
    fn call(
        &mut self,
        conn: &Connection,
        state: &mut WriterState<'_>,
    ) -> Option<rusqlite::Result<T>> {
        self.0.take().map(|work| work(conn, state))
    }

    fn repeatable(&self) -> bool {
        false
    }
}

/// Work that can run again after what it did was rolled back.
pub(crate) struct Again<F>(pub(crate) F);

impl<T, F> Work<T> for Again<F>
where
    F: FnMut(&Connection, &mut WriterState<'_>) -> rusqlite::Result<T> + Send,
{
    fn call(
        &mut self,
        conn: &Connection,
        state: &mut WriterState<'_>,
    ) -> Option<rusqlite::Result<T>> {
        Some((self.0)(conn, state))
    }

    fn repeatable(&self) -> bool {
        true
    }
}

struct Pending<T, W> {
    durability: Durability,
    work: W,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, W> Command for Pending<T, W>
where
    T: Send,
    W: Work<T>,
{
    fn durability(&self) -> Durability {
        self.durability
    }

    fn run(&mut self, conn: &Connection, state: &mut WriterState<'_>) -> bool {
        let Some(result) = self.work.call(conn, state) else {
            return false;
        };
        let result = result.map_err(sql);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn repeatable(&self) -> bool {
        self.work.repeatable()
    }

    fn answer(self: Box<Self>, batch: Result<()>) {
        let answer = match (batch, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Unavailable("write was not run".into())),
        };
        // The caller may have stopped waiting (its future was dropped); nothing to do then.
        let _ = self.reply.send(answer);
    }
}

type Queued = Box<dyn Command>;

/// Handle to the writer thread.
pub(crate) struct Writer {
    sender: Mutex<Option<Sender<Queued>>>,
    thread: Mutex<Option<JoinHandle<Result<()>>>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the thread on an already configured and migrated connection.
    pub(crate) fn start(
        conn: Connection,
        wal: PathBuf,
        max_batch: usize,
        stream_tails: usize,
    ) -> Result<Writer> {
        let (sender, receiver) = mpsc::channel::<Queued>();
        let counters = Arc::new(Counters::default());
        let answers = Answers::start();
        let thread = {
            let counters = Arc::clone(&counters);
            let max_batch = max_batch.max(1);
            let thread = Thread {
                wal,
                max_batch,
                stream_tails,
                answers,
            };
            std::thread::Builder::new()
                .name("sessiond-sqlite-writer".into())
                .spawn(move || run(conn, receiver, &thread, &counters))
                .map_err(|e| io("cannot start the sqlite writer thread", e))?
        };
        Ok(Writer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            counters,
        })
    }

    /// Queues `work` for the next batch (commands run in queue order) and returns the future
    /// of its answer, which arrives once the batch committed (`Unconfirmed`) or committed and
    /// was fsynced (`Confirmed`). `work` gets the writer's state and must leave its stream
    /// tails true of the rows it wrote (forget them all when unsure).
    pub(crate) fn enqueue<T, W>(
        &self,
        durability: Durability,
        work: W,
    ) -> Result<impl std::future::Future<Output = Result<T>> + Send + 'static>
    where
        T: Send + 'static,
        W: Work<T> + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let command: Queued = Box::new(Pending {
            durability,
            work,
            result: None,
            reply,
        });
        {
            let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(sender) = sender.as_ref() else {
                return Err(closed());
            };
            sender.send(command).map_err(|_| closed())?;
        }
        Ok(async move {
            answer
                .await
                .map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))?
        })
    }

    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting commands, lets the thread finish the queue and checkpoint, joins it.
    /// A second call returns at once.
    pub(crate) async fn close(&self) -> Result<()> {
        drop(
            self.sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(thread) = thread else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| StoreError::Unavailable(format!("joining the sqlite writer: {e}")))?
            .map_err(|_| StoreError::Unavailable("the sqlite writer thread panicked".into()))?
    }
}

/// What the thread body is started with besides its connection and queue.
struct Thread {
    wal: PathBuf,
    max_batch: usize,
    stream_tails: usize,
    answers: Answers,
}

/// Answers a batch's confirmed commands from a task of the runtime that started the writer.
///
/// Each answer is a oneshot send that wakes its caller's task. Sent from the writer thread,
/// every wake is a remote one: on a busy machine the woken worker thread preempts the writer
/// (or is unparked) once per caller, and with many streams (a group commit of ~36 appends, each
/// its own command) that was about one thread switch per append for the workers and one
/// preemption per three appends for the writer (`/proc/<pid>/task/*/status` at C64/N1000,
/// docs/benchmarks.md). Handed to one task instead, the batch costs one remote wake; that
/// task's sends wake the callers on its own worker. A batch of one command is answered
/// directly (no extra hop), unless earlier batches are still with the task, so callers are
/// always answered in commit order. Without a runtime at start, or once its task is gone
/// (the runtime shut down), the thread answers directly as before. The answers wait for that
/// runtime to run the task: it is the server's own runtime (the engine is opened on it), and
/// a caller blocking one of its threads on a write would already stall its other tasks.
struct Answers {
    relay: Option<tokio::sync::mpsc::UnboundedSender<Vec<Queued>>>,
    /// Batches sent to the task and not yet answered.
    pending: Arc<AtomicU64>,
}

impl Answers {
    fn start() -> Answers {
        let pending = Arc::new(AtomicU64::new(0));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Answers {
                relay: None,
                pending,
            };
        };
        let (relay, mut batches) = tokio::sync::mpsc::unbounded_channel::<Vec<Queued>>();
        let left = Arc::clone(&pending);
        runtime.spawn(async move {
            while let Some(batch) = batches.recv().await {
                for command in batch {
                    command.answer(Ok(()));
                }
                left.fetch_sub(1, Ordering::Release);
            }
        });
        Answers {
            relay: Some(relay),
            pending,
        }
    }

    /// Answers `confirmed` (their batch is durable) with their own results.
    fn confirmed(&self, confirmed: Vec<Queued>) {
        let relayed = confirmed.len() > 1 || self.pending.load(Ordering::Acquire) > 0;
        let confirmed = match self.relay.as_ref().filter(|_| relayed) {
            Some(relay) => {
                self.pending.fetch_add(1, Ordering::AcqRel);
                match relay.send(confirmed) {
                    Ok(()) => return,
                    Err(unsent) => {
                        // The task is gone with its runtime, and with it any batch it had not
                        // answered yet (their callers see the writer as stopped): nothing is
                        // left to keep the order behind.
                        self.pending.store(0, Ordering::Release);
                        unsent.0
                    }
                }
            }
            None => confirmed,
        };
        for command in confirmed {
            command.answer(Ok(()));
        }
    }
}

/// The thread body.
fn run(
    conn: Connection,
    receiver: Receiver<Queued>,
    thread: &Thread,
    counters: &Counters,
) -> Result<()> {
    let (wal, max_batch) = (thread.wal.as_path(), thread.max_batch);
    // Borrows the connection: dropped (end of this block) before it is closed.
    {
        let mut state = WriterState::prepare(&conn, thread.stream_tails);
        let mut failed: Option<String> = state
            .as_ref()
            .err()
            .map(|e| format!("the sqlite writer cannot prepare its statements: {e}"));
        let mut batch: Vec<Queued> = Vec::new();
        let series = CommitMetrics::new();
        while let Ok(first) = receiver.recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let state = match (&failed, state.as_mut()) {
                (None, Ok(state)) => state,
                (reason, _) => {
                    let reason = reason.as_deref().unwrap_or("the sqlite writer failed");
                    for command in batch.drain(..) {
                        command.answer(Err(StoreError::Unavailable(reason.to_owned())));
                    }
                    continue;
                }
            };
            let ends = Ends {
                wal,
                counters,
                series: &series,
                answers: &thread.answers,
            };
            if let Err(error) = commit_batch(&conn, &mut batch, state, &ends) {
                tracing::error!(%error, "sqlite writer stops accepting writes");
                failed = Some(match error {
                    StoreError::Unavailable(reason) | StoreError::Corrupt(reason) => reason,
                });
            }
        }
    }
    // Every sender is gone and the queue is empty: fold the WAL into the database file.
    let checkpoint = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            row.get::<_, i64>(0)
        })
        .map_err(sql);
    if let Ok(1) = checkpoint {
        tracing::warn!("sqlite checkpoint at close was incomplete (a reader was busy)");
    }
    let closed = conn.close().map_err(|(_, e)| sql(e));
    checkpoint.and(closed).map(|_| ())
}

/// Where a batch's outcome goes: the WAL to fsync, the counters and series, the answers.
struct Ends<'a> {
    wal: &'a Path,
    counters: &'a Counters,
    series: &'a CommitMetrics,
    answers: &'a Answers,
}

/// Runs one batch in one transaction and answers every command of it. Returns `Err` only when
/// the writer must stop (the WAL fsync failed).
fn commit_batch(
    conn: &Connection,
    batch: &mut Vec<Queued>,
    state: &mut WriterState<'_>,
    ends: &Ends<'_>,
) -> Result<()> {
    let Ends {
        wal,
        counters,
        series,
        answers,
    } = *ends;
    let size = batch.len();
    let committed = run_transaction(conn, batch, state);
    let commit_started = match committed {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, size, "sqlite batch rolled back");
            for command in batch.drain(..) {
                command.answer(Err(duplicate(&e)));
            }
            return Ok(());
        }
    };
    counters.commits.fetch_add(1, Ordering::Relaxed);
    counters.writes.fetch_add(size as u64, Ordering::Relaxed);

    let (unconfirmed, confirmed): (Vec<Queued>, Vec<Queued>) = batch
        .drain(..)
        .partition(|c| c.durability() == Durability::Unconfirmed);
    for command in unconfirmed {
        command.answer(Ok(()));
    }
    let synced = std::fs::File::open(wal).and_then(|f| f.sync_data());
    let seconds = commit_started.elapsed().as_secs_f64();
    series.commits.increment(1);
    series.batch_size.record(size as f64);
    series.seconds.record(seconds);
    match synced {
        Ok(()) => {
            answers.confirmed(confirmed);
            Ok(())
        }
        Err(e) => {
            let reason = format!("fsync of the sqlite WAL failed: {e}");
            for command in confirmed {
                command.answer(Err(StoreError::Unavailable(reason.clone())));
            }
            Err(StoreError::Unavailable(reason))
        }
    }
}

/// `BEGIN IMMEDIATE`, every command under its own savepoint, `COMMIT`. Returns when the
/// commit started (for the commit-time histogram). On `Err` nothing of the batch persisted.
///
/// Every statement of the frame is prepared once for the thread (`hot.rs`); `execute_batch`,
/// which rusqlite's `Transaction` uses for `BEGIN` and `COMMIT`, parses its SQL every time.
fn run_transaction(
    conn: &Connection,
    batch: &mut [Queued],
    state: &mut WriterState<'_>,
) -> Result<Instant> {
    state.begin.execute([]).map_err(sql)?;
    let done = run_commands(conn, batch, state).and_then(|committed| {
        let started = Instant::now();
        let end = if committed {
            &mut state.commit
        } else {
            &mut state.rollback
        };
        end.execute([]).map_err(sql)?;
        Ok(started)
    });
    if done.is_err() {
        state.tails.forget_all();
        if !conn.is_autocommit() {
            // What `Transaction`'s drop did: nothing of the batch may persist. If even the
            // rollback fails the connection is unusable; the next `BEGIN` reports it.
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    done
}

/// Runs each command of the open transaction under its own savepoint, or a lone command
/// without one. True: commit; false: roll back (a lone command failed, and the transaction
/// was its savepoint).
fn run_commands(
    conn: &Connection,
    batch: &mut [Queued],
    state: &mut WriterState<'_>,
) -> Result<bool> {
    if let [command] = batch {
        if command.run(conn, state) {
            return Ok(true);
        }
        state.tails.forget_all();
        return Ok(false);
    }
    if batch.iter().all(|c| c.repeatable()) {
        // Stops at the first failure; then all of them run again, each under its savepoint.
        if batch.iter_mut().all(|c| c.run(conn, state)) {
            return Ok(true);
        }
        state.tails.forget_all();
        state.rollback.execute([]).map_err(sql)?;
        state.begin.execute([]).map_err(sql)?;
    }
    for command in batch.iter_mut() {
        state.savepoint.execute([]).map_err(sql)?;
        if command.run(conn, state) {
            state.release.execute([]).map_err(sql)?;
        } else {
            state.tails.forget_all();
            conn.execute_batch("ROLLBACK TO command; RELEASE command")
                .map_err(sql)?;
        }
    }
    Ok(true)
}

/// `StoreError` is not `Clone`; a batch failure is reported to every caller of the batch.
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
    }
}
