//! Online snapshots of a data directory's database, taken from another process while the
//! server keeps writing (`sessiond backup`).
//!
//! Why `VACUUM INTO` rather than the online backup API: it needs no extra rusqlite feature (so
//! nothing is rebuilt for it), it runs as one read transaction (in WAL mode the server's writer
//! is never blocked and the copy never restarts because the source changed; the backup API
//! restarts a multi-step copy whenever another process writes), and its output is compact (no
//! free pages). SQLite does not fsync that output, so [`snapshot`] does it before returning.
//!
//! The snapshot also answers which cold-tier segment objects it references: exactly the
//! objects a restore of this copy needs, since segments are immutable and written (and
//! fsynced) before the engine row that names them commits.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use sessiond_store::{Result, StoreError};

use crate::error::{io, sql};
use crate::DB_FILE;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Size of the copied database file in bytes.
    pub bytes: u64,
    /// Schema version of the copy (`PRAGMA user_version`).
    pub schema_version: i64,
    /// Object keys of every cold segment the copy references, sorted.
    pub segment_keys: Vec<String>,
}

/// Copies `<dir>/sessiond.db` to `dest` (which must not exist) as of one point in time,
/// checks the copy (`PRAGMA quick_check`), fsyncs it, and lists the segments it references.
/// Blocking; safe while a server writes the same file.
pub fn snapshot(dir: &Path, dest: &Path) -> Result<Snapshot> {
    let source = dir.join(DB_FILE);
    if !source.is_file() {
        return Err(StoreError::Unavailable(format!(
            "no database at {}",
            source.display()
        )));
    }
    let dest_text = dest
        .to_str()
        .ok_or_else(|| StoreError::Unavailable(format!("not a UTF-8 path: {}", dest.display())))?;
    let conn = Connection::open_with_flags(
        &source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql)?;
    conn.execute("VACUUM INTO ?1", [dest_text]).map_err(sql)?;
    drop(conn);

    let copy = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    let check: String = copy
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sql)?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!(
            "the snapshot fails its check: {check}"
        )));
    }
    let schema_version: i64 = copy
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql)?;
    let has_segments: bool = copy
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'stream_segments')",
            [],
            |r| r.get(0),
        )
        .map_err(sql)?;
    let mut segment_keys = Vec::new();
    if has_segments {
        let mut stmt = copy
            .prepare("SELECT DISTINCT object_key FROM stream_segments ORDER BY object_key")
            .map_err(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sql)?;
        for key in rows {
            segment_keys.push(key.map_err(sql)?);
        }
    }
    drop(copy);

    let file = std::fs::File::open(dest).map_err(|e| io("cannot open the snapshot", e))?;
    file.sync_all()
        .map_err(|e| io("cannot sync the snapshot", e))?;
    let bytes = file
        .metadata()
        .map_err(|e| io("cannot stat the snapshot", e))?
        .len();
    Ok(Snapshot {
        bytes,
        schema_version,
        segment_keys,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{SqliteEngine, SqliteOptions};
    use sessiond_store::EngineAdmin as _;

    #[tokio::test]
    async fn snapshot_of_a_live_engine_is_a_checked_copy() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("copy.db");
        let snap = snapshot(dir.path(), &dest).unwrap();
        assert_eq!(snap.schema_version, crate::SCHEMA_VERSION);
        assert!(snap.segment_keys.is_empty());
        assert_eq!(snap.bytes, std::fs::metadata(&dest).unwrap().len());
        // A second snapshot into an existing file is refused, not merged.
        assert!(snapshot(dir.path(), &dest).is_err());
        engine.close().await.unwrap();
        let missing = snapshot(&out.path().join("nothing"), &out.path().join("x.db"));
        assert!(missing.unwrap_err().to_string().contains("no database"));
    }
}
