//! The embedded default engine of sessiond: one SQLite database file in WAL mode.
//!
//! It implements every storage trait of `sessiond-store` with exactly the behaviour of the
//! in-memory reference engine (the shared suite checks it). Writes are serialized through one
//! thread that group-commits (many concurrent writes share one transaction and one fsync);
//! reads run on a small pool of read-only connections and never wait for the writer.
//!
//! Module map:
//! - [`schema`]: the on-disk format, its migrations and the durability argument.
//! - `writer`: the writer thread, group commit, `Durability` handling, commit metrics.
//! - `reader`: the read-only connection pool.
//! - `sessions`, `cache`, `objects`, `streams`: the trait implementations as SQL.
//! - [`erasures`]: the erasure list, and its re-application after a restore.
//! - `error`: mapping of SQLite errors onto `StoreError`.
//!
//! Layering, bottom → top: `error` → `schema`, `writer`, `reader` → the engine handle
//! ([`SqliteEngine`], here) → helpers that several tables' statements share (`stream_rows`,
//! `producers`, `compaction`) → one trait implementation per file (`sessions`, `cache`,
//! `objects`, `outbox`, `streams`, [`erasures`], [`backup`]; `routing` writes routed events
//! into the stream tables for `sessions` and `outbox`). Where one implementation uses
//! another's statements (`sessions` queues outbox events, `streams` lists by prefix like
//! `objects`), the import runs one way only; what runs both ways moves into a helper below.
//!
//! ```no_run
//! # fn main() -> Result<(), sessiond_store::StoreError> {
//! use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
//! let engine = SqliteEngine::open(std::path::Path::new("/var/lib/sessiond"), SqliteOptions::default())?;
//! let stores = sessiond_store::Stores::from_engine(engine.clone()).with_streams(engine);
//! # let _ = stores; Ok(()) }
//! ```

pub mod backup;
mod cache;
mod compaction;
pub mod erasures;
mod error;
mod forks;
mod hot;
mod objects;
mod outbox;
mod producers;
mod reader;
mod routing;
pub mod schema;
mod sessions;
mod stream_rows;
mod streams;
mod tails;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use sessiond_store::{Durability, EngineAdmin, Result};

pub use schema::SCHEMA_VERSION;
pub use writer::WriterStats;

use crate::error::{closed, io, sql};
use crate::hot::WriterState;
use crate::reader::Readers;
use crate::writer::{Once, Work, Writer};

/// File name of the database inside the engine's directory.
pub const DB_FILE: &str = "sessiond.db";

/// Tuning of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Most write commands committed in one transaction (at least 1).
    pub max_batch: usize,
    /// Read-only connections in the read pool (at least 1).
    pub readers: usize,
    /// Most writes waiting for the writer at once (at least 1). Beyond it, callers wait for a
    /// slot (backpressure) instead of growing the queue without bound.
    pub max_queued_writes: usize,
    /// Most streams whose row id and tail the writer remembers, so an append's tail check
    /// need not read the stream's row (0: always read it).
    pub stream_tails: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_batch: 1024,
            readers: 4,
            max_queued_writes: 65_536,
            stream_tails: 100_000,
        }
    }
}

/// The SQLite engine. Build it with [`SqliteEngine::open`], hand it to
/// `sessiond_store::Stores::from_engine`, and call `EngineAdmin::close` before exiting so
/// queued writes are flushed and the WAL is checkpointed.
pub struct SqliteEngine {
    path: PathBuf,
    closed: AtomicBool,
    writer: Writer,
    readers: Readers,
    /// Bounds the writer's queue; a permit is held while a write is queued or running.
    queue: Arc<tokio::sync::Semaphore>,
    /// The exclusive lock on `<dir>/sessiond.lock`, released by `close` (or drop).
    dir_lock: std::sync::Mutex<Option<std::fs::File>>,
    /// The outbox's route and the listeners of its appends (`routing`).
    routing: routing::Routing,
}

/// Name of the lock file that makes one data directory one process's.
pub const LOCK_FILE: &str = "sessiond.lock";

/// Takes the data directory's exclusive lock: two processes writing one database would each
/// trust their in-memory object state, so the second one must not start.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io(&format!("cannot open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(sessiond_store::StoreError::Unavailable(format!(
                "data directory {} is in use by another sessiond process",
                dir.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io(&format!("cannot lock {}", path.display()), e))
        }
    }
}

impl SqliteEngine {
    /// Opens (creating if needed) `<dir>/sessiond.db`, creating `dir` if missing, and migrates
    /// the schema to [`SCHEMA_VERSION`]. Blocking: call it at startup, not on a hot path.
    pub fn open(dir: &Path, options: SqliteOptions) -> Result<Arc<SqliteEngine>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io(&format!("cannot create {}", dir.display()), e))?;
        let dir_lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(sql)?;
        schema::configure_writer(&conn)?;
        schema::migrate(&mut conn)?;
        // The database and WAL files exist now; make their directory entries durable.
        sync_dir(dir)?;
        let readers = Readers::open(&path, options.readers)?;
        let writer = Writer::start(
            conn,
            wal_path(&path),
            options.max_batch,
            options.stream_tails,
        )?;
        tracing::debug!(path = %path.display(), "sqlite engine open");
        Ok(Arc::new(SqliteEngine {
            path,
            closed: AtomicBool::new(false),
            writer,
            readers,
            dir_lock: std::sync::Mutex::new(Some(dir_lock)),
            routing: routing::Routing::default(),
            queue: Arc::new(tokio::sync::Semaphore::new(
                options
                    .max_queued_writes
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
        }))
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many transactions the writer committed and how many writes they carried.
    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Runs a write command in the writer's next batch. It may write any row, so the writer
    /// forgets the stream rows it remembers (`tails.rs`) before it runs.
    async fn write<T, F>(&self, durability: Durability, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let work = move |conn: &Connection, state: &mut WriterState<'_>| {
            state.tails.forget_all();
            work(conn)
        };
        self.enqueue_work(durability, Once(Some(work))).await?.await
    }

    /// [`write`](Self::write) for a command that writes no stream table (`streams`,
    /// `stream_chunks`; sessions, cache entries, objects, the outbox), so the writer keeps the
    /// stream rows it remembers: with the forgetting, every session touch or cache write made
    /// the next append of each stream read its row again.
    async fn write_beside_streams<T, F>(&self, durability: Durability, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let work = move |conn: &Connection, _: &mut WriterState<'_>| work(conn);
        self.enqueue_work(durability, Once(Some(work))).await?.await
    }

    /// Queues a write command (waiting for a queue slot if the queue is full) and returns the
    /// future of its answer: commands are run in the order this returned in. The work gets the
    /// writer's state (`writer::Work`) and keeps its stream tails true of what it writes: a
    /// stream commit updates them, uses the prepared statements, and can run again.
    async fn enqueue_work<T, W>(
        &self,
        durability: Durability,
        work: W,
    ) -> Result<impl std::future::Future<Output = Result<T>> + Send + 'static>
    where
        T: Send + 'static,
        W: Work<T> + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let slot = Arc::clone(&self.queue)
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let answer = self.writer.enqueue(durability, work)?;
        Ok(async move {
            let result = answer.await;
            drop(slot);
            result
        })
    }

    /// Runs a read on the reader pool (inline: see `reader`).
    async fn read<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        self.readers.read(work).await
    }
}

#[async_trait]
impl EngineAdmin for SqliteEngine {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn exclusive(&self) -> bool {
        // `open` holds an exclusive lock on the data directory's lock file.
        true
    }

    async fn ping(&self) -> Result<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)))
            .await
            .map(|_| ())
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let flushed = self.writer.close().await;
        self.readers.close().await;
        // Everything is flushed and closed: another process may have the directory now.
        drop(
            self.dir_lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        flushed
    }
}

/// `<db>-wal`, the file SQLite appends commits to.
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// fsyncs a directory so entries created in it survive a crash (a no-op off Unix, where a
/// directory cannot be opened as a file).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&format!("cannot sync {}", dir.display()), e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
