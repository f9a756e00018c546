//! The pool of read-only connections.
//!
//! Reads never queue behind the writer: in WAL mode a reader sees the last commit that
//! finished before its statement started, concurrently with an ongoing write. Each read takes
//! an idle connection (a semaphore bounds waiting to the pool size, so there is always one to
//! take), runs one closure on a blocking thread (SQLite calls block), and puts the connection
//! back. Read-your-writes holds because the writer answers a caller only after `COMMIT`
//! returned, and every read statement starts a fresh read transaction after that point.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags};
use sessiond_store::{Result, StoreError};
use tokio::sync::Semaphore;

use crate::error::{closed, sql};
use crate::schema;

/// Upper bound of the pool size (the semaphore counts in `u32`; far more is never useful).
const MAX_READERS: usize = 256;

pub(crate) struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
    size: u32,
}

impl Readers {
    /// Opens `size` (at least 1) read-only connections to an existing database in WAL mode.
    pub(crate) fn open(path: &Path, size: usize) -> Result<Readers> {
        let size = size.clamp(1, MAX_READERS);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut idle = Vec::with_capacity(size);
        for _ in 0..size {
            let conn = Connection::open_with_flags(path, flags).map_err(sql)?;
            schema::configure_reader(&conn)?;
            idle.push(conn);
        }
        Ok(Readers {
            idle: Arc::new(Mutex::new(idle)),
            permits: Arc::new(Semaphore::new(size)),
            // `size` is at most MAX_READERS.
            size: u32::try_from(size).unwrap_or(u32::MAX),
        })
    }

    /// Runs `work` on an idle connection.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let idle = Arc::clone(&self.idle);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
                .ok_or_else(closed)?;
            let result = work(&conn).map_err(sql);
            idle.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite read task failed: {e}")))?
    }

    /// Waits for running reads, then closes every connection; later reads fail.
    pub(crate) async fn close(&self) {
        if let Ok(all) = self.permits.acquire_many(self.size).await {
            self.permits.close();
            let conns: Vec<Connection> = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
                .collect();
            drop(conns);
            drop(all);
        }
    }
}
