//! The on-disk format: connection settings, the schema and its migrations.
//!
//! Everything lives in one SQLite database file, `<dir>/sessiond.db`, in WAL mode (so the
//! directory also holds `sessiond.db-wal` and `sessiond.db-shm` while the engine runs). The
//! schema version is `PRAGMA user_version`: version `n` means migrations `1..=n` of
//! `MIGRATIONS` have been applied. Opening applies the missing ones in order, each in its own
//! `BEGIN IMMEDIATE` transaction together with the `user_version` bump, so a crash leaves the
//! file at some complete version. A file whose version is newer than this build knows is
//! refused rather than guessed at. To change the format, append a migration; never edit one
//! that has shipped.
//!
//! # Tables (version 1)
//!
//! | table | column | type | meaning |
//! | --- | --- | --- | --- |
//! | `sessions` | `id` | TEXT, primary key | session id |
//! | | `user_id` | TEXT, nullable | owning user |
//! | | `data` | TEXT | the application's JSON object |
//! | | `device` | TEXT, nullable | device description (JSON) |
//! | | `created_at`, `updated_at`, `last_seen_at` | INTEGER | unix ms |
//! | | `idle_ttl_ms` | INTEGER | idle window length |
//! | | `idle_expires_at`, `absolute_expires_at` | INTEGER | the two deadlines, unix ms |
//! | | `version` | INTEGER ≥ 0 | compare-and-set version (a `u64` below 2^63) |
//! | | `expires_at` | INTEGER | `min(idle_expires_at, absolute_expires_at)` |
//! | | `origin` | INTEGER 0/1 | (version 3) 0 = created with a service credential, 1 = on an open route |
//! | | `auth_time` | INTEGER | (the `auth_time` migration) unix ms of the user's last proof of identity |
//! | `cache` | `namespace`, `key` | TEXT, primary key together | entry address |
//! | | `value` | TEXT | JSON text, verbatim |
//! | | `stored_at` | INTEGER | unix ms |
//! | | `expires_at` | INTEGER, nullable | unix ms; NULL = never expires |
//! | `objects` | `kind`, `key` | TEXT, primary key together | object address |
//! | | `state` | BLOB | opaque object state |
//! | `alarms` | `kind`, `key`, `name` | TEXT, primary key together | alarm address |
//! | | `due_at` | INTEGER | unix ms |
//! | | `attempt` | INTEGER ≥ 0 | failed attempts so far (a `u32`) |
//! | | `payload` | TEXT | capability-defined |
//! | `erasures` | `user_hash` | TEXT, primary key | `base64url(sha256(user_id))` of an erased user |
//! | | `erased_at` | INTEGER | unix ms of the first erasure |
//!
//! Indexes: `sessions_by_user (user_id, created_at, id)` answers "this user's sessions, oldest
//! first" in index order; `sessions_by_expiry (expires_at)`, `cache_by_expiry (expires_at)`
//! (partial: only entries that expire) and `alarms_by_due (due_at)` let the sweeper and the
//! alarm scheduler find the earliest rows without scanning. `alarms` is `WITHOUT ROWID`: its
//! rows are small and always addressed by their key, so storing them in the key's b-tree saves
//! one lookup and the rowid; its due index then implicitly ends with the key, which is exactly
//! the tie-break order of `due_alarms`. `sessions`, `cache` and `objects` keep rowids because
//! their rows carry application payloads of unbounded size, which SQLite advises against
//! storing inside a `WITHOUT ROWID` b-tree.
//!
//! # Tables (version 2: Durable Streams)
//!
//! | table | column | type | meaning |
//! | --- | --- | --- | --- |
//! | `streams` | `id` | INTEGER, primary key (the rowid) | this incarnation of the stream |
//! | | `path` | TEXT, unique | the stream's path |
//! | | `tail` | INTEGER ≥ 0 | offset after the last byte as of the row's last write (a `u64` below 2^63); the stream's tail is the later of it and its last chunk's end (the `lazy tail` migration) |
//! | | `expires_at` | INTEGER, nullable | unix ms; NULL = never expires |
//! | | `state` | BLOB | the capability's opaque per-stream state |
//! | | `start` | INTEGER | retained start: rows below it were trimmed (version 5) |
//! | `stream_chunks` | `stream`, `offset` | INTEGER, primary key together | `streams.id`, first byte's offset |
//! | | `data` | BLOB | the chunk's bytes, verbatim |
//! | `stream_segments` | `stream`, `start` | INTEGER, primary key together | `streams.id`, first offset covered |
//! | | `end` | INTEGER | offset after the last byte covered |
//! | | `object_key` | TEXT | object-store key of the sealed segment file |
//!
//! Chunks and segments are keyed by the integer `streams.id`, not the path: the key of every
//! chunk row is then two varints (a few bytes) instead of a path of up to hundreds of bytes
//! repeated per chunk, so more chunks fit a page and a catch-up read touches fewer pages. A
//! deleted and recreated path gets a new `id` (the rowid of a new row); the delete removes the
//! old id's rows in the same transaction, so nothing of an old incarnation can show through
//! even if SQLite reuses the number. `stream_chunks` is `WITHOUT ROWID` so its rows live in the
//! `(stream, offset)` b-tree itself: a catch-up read is one seek plus a forward scan of
//! adjacent leaf pages, with no second lookup per chunk. Chunks larger than about a tenth of a
//! page spill to overflow pages (as they would in a rowid table); appends of a few hundred
//! bytes, the common case, stay inline. `streams` keeps a rowid because `state` (producer
//! states) can grow; `streams_by_expiry (expires_at)` is partial (only streams that expire).
//!
//! # Tables (version 3: idempotent producers)
//!
//! | table | column | type | meaning |
//! | --- | --- | --- | --- |
//! | `stream_producers` | `stream`, `id` | INTEGER, TEXT, primary key together | `streams.id`, `Producer-Id` |
//! | | `state` | BLOB | the capability's opaque producer state (epoch and sequence) |
//! | | `used_at` | INTEGER | unix ms of the producer's last accepted write |
//!
//! Producer states used to live inside `streams.state`, so every append rewrote all of them
//! (megabytes for a stream with thousands of producers). Now an append writes at most its own
//! producer's row. `stream_producers_by_use (stream, used_at, id)` finds the least recently
//! used rows when a commit's cap evicts. The migration only creates the table: the capability
//! moves producer states still found in an old `streams.state` into rows on that stream's next
//! commit, so the engine stays ignorant of the capability's encoding.
//!
//! # Invariants
//!
//! - `sessions.expires_at = min(idle_expires_at, absolute_expires_at)` on every row: every
//!   write sets it and a `CHECK` constraint rejects a write that does not.
//! - A session is live at `now` iff `now < expires_at`; a cache entry iff `expires_at IS NULL
//!   OR now < expires_at`. Every read filters on this in SQL, so expired rows are invisible
//!   before the sweeper deletes them.
//! - Every alarm belongs to an object address; `delete_object` deletes the object's alarms in
//!   the same transaction. (There is no foreign key: an alarm may be armed before the object
//!   first saves state.)
//! - For every stream, `stream_chunks` offsets are strictly increasing with each chunk ending
//!   where the next starts, and the stream's tail, `max(tail, end of the last chunk)`, is the
//!   end of the last chunk: `commit` checks the expected tail and writes chunks and metadata in
//!   one command of the writer, so a lost race writes nothing. A commit whose metadata differs
//!   only in the tail writes no row (`stream_rows::tail_sql`); whatever deletes chunks (trim,
//!   seal, compaction) first writes the tail into the row. Every `stream_chunks`/`stream_segments`/`stream_producers` row's
//!   `stream` is a live `streams.id`: `delete_stream` removes them all in one command.
//! - Text is UTF-8 compared with SQLite's BINARY collation (memcmp), i.e. byte order, which is
//!   the order `list_objects` promises.
//!
//! # Durability
//!
//! All writes go through one connection owned by the writer thread (see `writer.rs`), which
//! commits batches of commands in one transaction. In WAL mode a commit appends the
//! transaction's pages to `sessiond.db-wal` followed by a commit frame; recovery after a crash
//! replays the WAL up to the last commit frame whose checksums are valid, so a transaction is
//! durable exactly when its frames are on stable storage. The writer runs with
//! `synchronous=NORMAL` (SQLite then does not fsync at commit, only at checkpoints) and, after
//! each commit, calls `fdatasync` on the WAL file itself before it acknowledges any
//! `Durability::Confirmed` write of the batch: an acknowledged confirmed write is on disk, and
//! one fsync covers the whole batch. Checkpoints (automatic, and `TRUNCATE` at close) are
//! SQLite's own and fsync the WAL before and the database after copying pages back. The
//! directory is fsynced once at open, after the WAL file exists, so the file's directory entry
//! is durable too. `Durability::Unconfirmed` writes are acknowledged after COMMIT (visible to
//! readers) but before that fsync; a crash in between may lose them, never corrupt the file.

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::sql;
use sessiond_store::{Result, StoreError};

/// Schema version this build writes: the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Ordered migrations; entry `i` moves the file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_ERASURES,
    MIGRATION_AUTH_TIME,
    MIGRATION_OUTBOX,
    MIGRATION_LAZY_TAIL,
];

/// Version 1: sessions, cache, objects and alarms.
const MIGRATION_1: &str = "
CREATE TABLE sessions (
    id                  TEXT    NOT NULL PRIMARY KEY,
    user_id             TEXT,
    data                TEXT    NOT NULL,
    device              TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    idle_ttl_ms         INTEGER NOT NULL,
    idle_expires_at     INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    version             INTEGER NOT NULL CHECK (version >= 0),
    expires_at          INTEGER NOT NULL
        CHECK (expires_at = min(idle_expires_at, absolute_expires_at))
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at, id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE cache (
    namespace  TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    stored_at  INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX cache_by_expiry ON cache (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE objects (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE TABLE alarms (
    kind    TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    name    TEXT    NOT NULL,
    due_at  INTEGER NOT NULL,
    attempt INTEGER NOT NULL CHECK (attempt >= 0),
    payload TEXT    NOT NULL,
    PRIMARY KEY (kind, key, name)
) WITHOUT ROWID;
CREATE INDEX alarms_by_due ON alarms (due_at);
";

/// Version 2: Durable Streams (metadata, hot chunks, cold-segment index).
const MIGRATION_2: &str = "
CREATE TABLE streams (
    id         INTEGER PRIMARY KEY,
    path       TEXT    NOT NULL UNIQUE,
    tail       INTEGER NOT NULL CHECK (tail >= 0),
    expires_at INTEGER,
    state      BLOB    NOT NULL
);
CREATE INDEX streams_by_expiry ON streams (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE stream_chunks (
    stream INTEGER NOT NULL,
    offset INTEGER NOT NULL CHECK (offset >= 0),
    data   BLOB    NOT NULL,
    PRIMARY KEY (stream, offset)
) WITHOUT ROWID;

CREATE TABLE stream_segments (
    stream     INTEGER NOT NULL,
    start      INTEGER NOT NULL CHECK (start >= 0),
    end        INTEGER NOT NULL CHECK (end >= start),
    object_key TEXT    NOT NULL,
    PRIMARY KEY (stream, start)
) WITHOUT ROWID;
";

/// Version 3: idempotent producers in their own rows.
const MIGRATION_3: &str = "
CREATE TABLE stream_producers (
    stream  INTEGER NOT NULL,
    id      TEXT    NOT NULL,
    state   BLOB    NOT NULL,
    used_at INTEGER NOT NULL,
    PRIMARY KEY (stream, id)
) WITHOUT ROWID;
CREATE INDEX stream_producers_by_use ON stream_producers (stream, used_at, id);
";

/// Version 4: how each session was created (`0` service credential, `1` open route). Rows
/// from before read as service-created: that is what they were trusted as.
const MIGRATION_4: &str = "
ALTER TABLE sessions ADD COLUMN origin INTEGER NOT NULL DEFAULT 0 CHECK (origin IN (0, 1));
";

/// Version 5: each stream's retained start (retention trims the data below it). Existing
/// streams keep everything: start 0.
const MIGRATION_5: &str = "
ALTER TABLE streams ADD COLUMN start INTEGER NOT NULL DEFAULT 0 CHECK (start >= 0);
";

/// The erasure list (`DELETE /v1/users/{u}`): hashed ids of erased users and when. Written
/// with `IF NOT EXISTS`, so its place among other migrations appended at the same time does
/// not matter.
const MIGRATION_ERASURES: &str = "
CREATE TABLE IF NOT EXISTS erasures (
    user_hash TEXT    NOT NULL PRIMARY KEY,
    erased_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// When the user last proved who they are (the edge check's `max_age`). Rows from before
/// read their creation time: the login that created them is the last proof known. Touches
/// only the `sessions` table, so its place among other migrations does not matter.
const MIGRATION_AUTH_TIME: &str = "
ALTER TABLE sessions ADD COLUMN auth_time INTEGER;
UPDATE sessions SET auth_time = created_at;
";

/// The outbox (`sessiond_store::outbox`): events written in the same transaction as the
/// session change they record, deleted once relayed. `seq` orders them (never reused, so a
/// relay's delete can never hit a newer event). Independent of every other migration.
const MIGRATION_OUTBOX: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    data BLOB    NOT NULL
);
";

/// Changes no table, only what `streams.tail` means: since this version a plain append writes
/// its chunks and not the stream's row, so the row's `tail` may lag the last chunk's end
/// (`stream_rows::tail_sql`). A build from before reads the column as the tail and would
/// append over the lagging offset: the version bump makes such a build refuse the file.
const MIGRATION_LAZY_TAIL: &str = "-- streams.tail: the tail as of the row's last write";

/// How long a connection waits for a lock before reporting busy. Only checkpoints and WAL
/// recovery make readers and the writer wait for each other, and never for long.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Prepared statements a connection keeps. The engine has about 70 distinct `prepare_cached`
/// statements; rusqlite's default of 16 made a mixed workload (sessions, streams, the
/// middleware's analytics) evict and re-parse them all the time.
const STATEMENT_CACHE: usize = 128;

/// What every connection needs for its prepared statements to stay prepared: the busy
/// timeout, a statement cache that holds the engine's statements, and the query planner
/// stability guarantee. Why QPSG: without it SQLite (3.4x and later) marks a statement whose
/// `LIMIT ?` (or whose bound values might change the plan) for re-preparation on every new
/// binding, so each call of such a cached statement parsed and planned its SQL again (a
/// session create's per-user listing, the outbox read and the compactor's chunk reads spent
/// more in the parser than in the query). The engine runs no `ANALYZE`, so a plan never
/// depends on a bound value anyway.
fn configure_statements(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(sql)?;
    Ok(())
}

/// WAL frames after which a commit checkpoints (SQLite's default is 1,000). With many streams
/// each append of a group commit dirties a leaf page of its own stream, and a stream's leaf is
/// rarely written twice within 1,000 frames, so the checkpoint copied about one page per frame
/// back into the database (and read many back first). Four times as many frames let it copy a
/// page once for several of its writes: at 1,000 streams and 64 writers the writer thread
/// wrote 13 % and read 15 % fewer bytes per append (docs/benchmarks.md, "Chunk rows in append
/// order"); one stream's appends, whose one hot page is copied once per checkpoint anyway, are
/// unchanged. 4,000 stays below the 4,062 frames of the WAL index's first hash table, so a
/// page lookup in the WAL still searches one table. The WAL file grows to about 16 MB between
/// checkpoints (4 KB pages) and is truncated at close.
const WAL_AUTOCHECKPOINT_FRAMES: u32 = 4_000;

/// Settings of the one write connection: WAL, `synchronous=NORMAL` (the writer fsyncs the WAL
/// itself, see the module docs), checkpoints every [`WAL_AUTOCHECKPOINT_FRAMES`] frames,
/// foreign keys off (none are declared).
pub(crate) fn configure_writer(conn: &Connection) -> Result<()> {
    configure_statements(conn)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "sqlite refused WAL mode (journal_mode is {mode}); is the file system local?"
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_FRAMES};"
    ))
    .map_err(sql)?;
    Ok(())
}

/// Settings of a read-only connection.
pub(crate) fn configure_reader(conn: &Connection) -> Result<()> {
    configure_statements(conn)?;
    // Memory-mapped reads of the database file avoid a pread syscall per page on hot data.
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA mmap_size = 268435456;")
        .map_err(sql)
}

/// The file's schema version.
pub(crate) fn version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .optional()
        .map_err(sql)
        .map(|v| v.unwrap_or(0))
}

/// Brings the file to [`SCHEMA_VERSION`], one transaction per migration.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        // Read the version under the write lock, so two processes cannot both apply a step.
        let current = version(&tx)?;
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        let step = usize::try_from(current)
            .ok()
            .and_then(|i| MIGRATIONS.get(i))
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "database schema version {current} is not one this build knows \
                     (it writes version {SCHEMA_VERSION}); refusing to open it"
                ))
            })?;
        tx.execute_batch(step).map_err(sql)?;
        // PRAGMA takes no bound parameters; the value is an integer we computed.
        tx.execute_batch(&format!("PRAGMA user_version = {};", current + 1))
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        tracing::info!(from = current, to = current + 1, "sqlite schema migrated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer checkpoints after the frames chosen above, not SQLite's default.
    #[test]
    fn the_writer_checkpoints_after_its_frame_count() {
        let dir = tempfile::tempdir().expect("dir");
        let conn = Connection::open(dir.path().join("w.db")).expect("open");
        configure_writer(&conn).expect("configure");
        let frames: u32 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
            .expect("pragma");
        assert_eq!(frames, WAL_AUTOCHECKPOINT_FRAMES);
    }

    /// A cached statement with a bound `LIMIT` runs with new values without being prepared
    /// again (SQLite re-prepares such statements on every binding unless QPSG is on).
    #[test]
    fn a_bound_limit_does_not_reprepare() {
        let conn = Connection::open_in_memory().expect("open");
        configure_statements(&conn).expect("configure");
        conn.execute_batch(
            "CREATE TABLE t (k INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3);",
        )
        .expect("table");
        let mut rows = Vec::new();
        for limit in 1..=3_i64 {
            let mut stmt = conn
                .prepare_cached("SELECT k FROM t WHERE k > ?1 ORDER BY k LIMIT ?2")
                .expect("prepare");
            let got: Vec<i64> = stmt
                .query_map(rusqlite::params![0, limit], |row| row.get(0))
                .expect("query")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            rows.push(got.len());
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
        }
        assert_eq!(rows, [1, 2, 3]);
    }
}
