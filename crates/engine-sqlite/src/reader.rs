//! The pool of read-only connections.
//!
//! Reads never queue behind the writer: in WAL mode a reader sees the last commit that
//! finished before its statement started, concurrently with an ongoing write. Read-your-writes
//! holds because the writer answers a caller only after `COMMIT` returned, and every read
//! statement starts a fresh read transaction after that point.
//!
//! Reads run **inline on the calling task's thread**. Every read the engine issues is an
//! indexed lookup or a bounded range (the capabilities cap every listing), which takes a few
//! microseconds; measured under load, handing each read to a blocking thread and back cost far
//! more than the read itself (futex wake-ups and context switches dominated a GET profile).
//! A connection is held only for the synchronous SQL call, never across an `.await`, so the
//! pool's std mutexes are never held while a task is suspended. With at least as many
//! connections as runtime worker threads, `try_lock` finds a free one; when every connection
//! is busy (more threads than connections) the caller waits briefly for one.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OpenFlags};
use sessiond_store::Result;

use crate::error::{closed, sql};
use crate::schema;

/// Upper bound of the pool size (far more is never useful).
const MAX_READERS: usize = 256;

pub(crate) struct Readers {
    /// `None` once closed.
    conns: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
}

impl Readers {
    /// Opens `size` (at least 1) read-only connections to an existing database in WAL mode.
    pub(crate) fn open(path: &Path, size: usize) -> Result<Readers> {
        let size = size.clamp(1, MAX_READERS);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conns = Vec::with_capacity(size);
        for _ in 0..size {
            let conn = Connection::open_with_flags(path, flags).map_err(sql)?;
            schema::configure_reader(&conn)?;
            conns.push(Mutex::new(Some(conn)));
        }
        Ok(Readers {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// A free connection slot: the first one `try_lock` gets, starting at a rotating index,
    /// else a wait on the starting one.
    fn slot(&self) -> MutexGuard<'_, Option<Connection>> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(guard) = self.conns[(start + i) % n].try_lock() {
                return guard;
            }
        }
        self.conns[start]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` on a connection of the pool.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        let guard = self.slot();
        let conn = guard.as_ref().ok_or_else(closed)?;
        work(conn).map_err(sql)
    }

    /// Closes every connection (waiting for running reads); later reads fail.
    pub(crate) async fn close(&self) {
        for conn in &self.conns {
            let taken = conn.lock().unwrap_or_else(PoisonError::into_inner).take();
            drop(taken);
        }
    }
}
