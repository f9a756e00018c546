//! `sessiond backup` and `sessiond restore`: a consistent copy of a SQLite data directory,
//! taken while the server runs, and its way back.
//!
//! Why one snapshot decides everything: the database and the local cold tier change
//! independently, so copying both directories would mix two moments. Instead the database is
//! copied as of one read transaction (see `sessiond_engine_sqlite::backup`), and exactly the
//! segment files that copy references are copied next to it. Segment files are immutable and
//! are written before the row naming them commits, so they are complete whenever the snapshot
//! can see them; the one race is a stream deleted after the snapshot (its files go first),
//! which is detected (a referenced file is missing) and answered with a fresh snapshot.
//!
//! Erasures outlive a restore: the data directory may keep `erasures.list` (the server's
//! copy of its erasure list), and `restore` re-applies that list, merged with the backup's
//! own, to the copied database *before* it goes into place, so a backup taken before an
//! erasure never brings the erased user back (see `crate::users`).
//!
//! A backup is a directory (no archive dependency): `manifest.json`, `sessiond.db` and
//! `segments/<key>` for each referenced segment. It is built under `<to>.partial` and renamed
//! into place only when complete and fsynced, so a directory named `<to>` is always whole.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use sessiond_streams::config::ColdBackend;

use crate::config::{Config, EngineKind};
use crate::progress::Progress;
use crate::users::ERASURE_FILE;

/// Name of the database file inside a backup.
const DB_FILE: &str = "sessiond.db";
/// Name of the manifest inside a backup.
const MANIFEST: &str = "manifest.json";
/// Directory of the segment files inside a backup.
const SEGMENTS: &str = "segments";
/// Version of the backup layout this build writes and reads.
const FORMAT: u32 = 1;
/// Fresh snapshots tried when streams keep being deleted under the copy.
const ATTEMPTS: usize = 5;

/// `manifest.json`: what the backup holds, checked by `restore`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    sessiond_version: String,
    created_at_ms: u64,
    schema_version: i64,
    database_bytes: u64,
    segments: Vec<SegmentEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SegmentEntry {
    key: String,
    bytes: u64,
}

/// The directory holding the local cold tier, or `None` when segments are not local files.
fn local_segments_dir(config: &Config) -> Option<PathBuf> {
    let cold = &config.streams.cold;
    (cold.enabled && cold.backend == ColdBackend::Local).then(|| {
        cold.local_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join(sessiond_segments::DEFAULT_LOCAL_DIR))
    })
}

/// A segment key as a relative path, refusing anything that could leave its directory.
fn key_path(key: &str) -> anyhow::Result<PathBuf> {
    let plain = key
        .split('/')
        .all(|part| !matches!(part, "" | "." | "..") && !part.contains('\\'));
    if !plain {
        bail!("refusing segment key {key:?}: not a plain relative path");
    }
    Ok(PathBuf::from(key))
}

fn refuse_engine(config: &Config) -> anyhow::Result<()> {
    match config.engine {
        EngineKind::Sqlite => Ok(()),
        EngineKind::Redis => bail!(
            "engine = redis: sessiond keeps no data of its own there, so there is nothing for \
             `sessiond backup` to copy; back up Redis itself (RDB snapshot or AOF, see \
             docs/operations.md#backup-and-restore)"
        ),
        EngineKind::Memory => bail!("engine = memory keeps nothing on disk: nothing to back up"),
    }
}

/// Progress goes to stderr, one line per step (stdout stays free for scripts); the segment
/// copies, the long part, have a bar ([`Progress`]).
fn progress(line: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// Creates `dir` (and missing parents) readable by the owner only: a backup holds session
/// data and stored secrets (webhook signing keys).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Copies one file and fsyncs the copy; returns its size.
fn copy_synced(from: &Path, to: &Path) -> std::io::Result<u64> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    let bytes = fs::copy(from, to)?;
    fs::File::open(to)?.sync_all()?;
    Ok(bytes)
}

/// Makes sure `dir` is missing or an empty directory.
fn require_empty(dir: &Path, what: &str) -> anyhow::Result<()> {
    require_empty_but(dir, what, None)
}

/// Makes sure `dir` is missing or holds nothing but `keep` (when given).
fn require_empty_but(dir: &Path, what: &str, keep: Option<&str>) -> anyhow::Result<()> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {what} {}", dir.display())),
        Ok(entries) => match entries
            .flatten()
            .find(|e| keep.is_none_or(|k| e.file_name() != k))
        {
            None => Ok(()),
            Some(_) => bail!(
                "{what} {} is not empty; refusing to overwrite it",
                dir.display()
            ),
        },
    }
}

/// One attempt: snapshot into `work` (empty), then copy the referenced segments. `Ok(None)`
/// means a referenced segment vanished (its stream was deleted after the snapshot).
fn attempt(config: &Config, work: &Path) -> anyhow::Result<Option<Manifest>> {
    let snap = crate::engine::sqlite_snapshot(&config.data_dir, &work.join(DB_FILE))?;
    progress(format_args!(
        "backup: database snapshot {} bytes, {} segment(s) referenced",
        snap.bytes,
        snap.segment_keys.len()
    ));
    let mut segments = Vec::with_capacity(snap.segment_keys.len());
    if !snap.segment_keys.is_empty() {
        let Some(source) = local_segments_dir(config) else {
            progress(format_args!(
                "backup: segments live in the S3 bucket; back the bucket up with it (not copied)"
            ));
            return Ok(Some(manifest(snap, segments)));
        };
        let mut bar = Progress::new("backup: segments", snap.segment_keys.len() as u64);
        for key in &snap.segment_keys {
            let rel = key_path(key)?;
            let from = source.join(&rel);
            match copy_synced(&from, &work.join(SEGMENTS).join(&rel)) {
                Ok(bytes) => {
                    bar.step(bytes);
                    segments.push(SegmentEntry {
                        key: key.clone(),
                        bytes,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {
                    return Ok(None)
                }
                Err(e) => return Err(e).with_context(|| format!("cannot copy {}", from.display())),
            }
        }
    }
    Ok(Some(manifest(snap, segments)))
}

fn manifest(snap: crate::engine::SqliteSnapshot, segments: Vec<SegmentEntry>) -> Manifest {
    let created_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Manifest {
        format: FORMAT,
        sessiond_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at_ms,
        schema_version: snap.schema_version,
        database_bytes: snap.bytes,
        segments,
    }
}

/// `sessiond backup`: writes a complete backup directory at `to` (which must not exist).
pub fn backup(config: &Config, to: &Path) -> anyhow::Result<()> {
    refuse_engine(config)?;
    if to.exists() {
        bail!("{} already exists; refusing to overwrite it", to.display());
    }
    let mut work = to.as_os_str().to_owned();
    work.push(".partial");
    let work = PathBuf::from(work);
    require_empty(&work, "leftover directory")?;
    for attempt_no in 0..ATTEMPTS {
        if attempt_no > 0 {
            // A stream's files go a moment before its rows: give the delete time to commit.
            std::thread::sleep(std::time::Duration::from_millis(100 << attempt_no));
        }
        create_private_dir(&work)?;
        match attempt(config, &work) {
            Ok(Some(manifest)) => return finish(&work, to, &manifest),
            Ok(None) => progress(format_args!(
                "backup: a stream was deleted during the copy; taking a fresh snapshot"
            )),
            Err(e) => {
                let _ = fs::remove_dir_all(&work);
                return Err(e);
            }
        }
        fs::remove_dir_all(&work).with_context(|| format!("cannot clean {}", work.display()))?;
    }
    bail!(
        "{ATTEMPTS} snapshots in a row referenced segment files that were gone (streams being \
         deleted, or a segment file lost from {}); try again, and check the server's log",
        local_segments_dir(config).unwrap_or_default().display()
    )
}

/// Writes the manifest, syncs every directory and renames the work directory into place.
fn finish(work: &Path, to: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let text = serde_json::to_vec_pretty(manifest)?;
    let path = work.join(MANIFEST);
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::File::open(&path)?.sync_all()?;
    sync_tree(work)?;
    fs::rename(work, to).with_context(|| format!("cannot rename into {}", to.display()))?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    progress(format_args!(
        "backup: done, {} ({} bytes of database, {} segment(s))",
        to.display(),
        manifest.database_bytes,
        manifest.segments.len()
    ));
    Ok(())
}

/// Fsyncs every directory under `dir` (new entries are durable only once their directory is).
fn sync_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

/// `sessiond restore`: puts the backup at `from` into `config.data_dir` (and the local segment
/// directory), both of which must be missing or empty.
pub fn restore(config: &Config, from: &Path) -> anyhow::Result<()> {
    refuse_engine(config)?;
    let path = from.join(MANIFEST);
    let text = fs::read(&path).with_context(|| {
        format!(
            "{} is not a sessiond backup (no {MANIFEST})",
            from.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("cannot parse {}", path.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "backup format {} is not supported by this sessiond (it reads format {FORMAT})",
            manifest.format
        );
    }
    // Check everything before writing anything.
    let db = from.join(DB_FILE);
    let db_bytes = fs::metadata(&db)
        .with_context(|| format!("backup has no {}", db.display()))?
        .len();
    if db_bytes != manifest.database_bytes {
        bail!(
            "{} has {db_bytes} bytes, the manifest says {}",
            db.display(),
            manifest.database_bytes
        );
    }
    for segment in &manifest.segments {
        let file = from.join(SEGMENTS).join(key_path(&segment.key)?);
        let len = fs::metadata(&file)
            .with_context(|| format!("backup lacks segment {}", file.display()))?
            .len();
        if len != segment.bytes {
            bail!(
                "{} has {len} bytes, the manifest says {}",
                file.display(),
                segment.bytes
            );
        }
    }
    // The erasure list is the one thing a restore keeps: users erased after the backup was
    // taken must stay erased (read now, re-applied to the copy before it goes into place).
    require_empty_but(&config.data_dir, "data directory", Some(ERASURE_FILE))?;
    let mirror = config.data_dir.join(ERASURE_FILE);
    let live_erasures = crate::users::read_mirror(&mirror)?;
    let segments_dir = local_segments_dir(config);
    if !manifest.segments.is_empty() {
        let Some(dir) = &segments_dir else {
            bail!("the backup has local segment files but the configured cold tier is not local");
        };
        if !dir.starts_with(&config.data_dir) {
            require_empty(dir, "segment directory")?;
        }
    }
    fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let total = manifest.segments.len();
    let mut bar = Progress::new("restore: segments", total as u64);
    for segment in &manifest.segments {
        let rel = key_path(&segment.key)?;
        let dir = segments_dir.as_deref().unwrap_or(&config.data_dir);
        let to = dir.join(&rel);
        copy_synced(&from.join(SEGMENTS).join(&rel), &to)
            .with_context(|| format!("cannot write {}", to.display()))?;
        bar.step(segment.bytes);
    }
    if let Some(dir) = segments_dir.filter(|d| d.exists()) {
        sync_tree(&dir)?;
    }
    // The database goes last, under a temporary name: a directory without `sessiond.db` is an
    // unfinished restore, never a server's state.
    let partial = config.data_dir.join(format!("{DB_FILE}.partial"));
    copy_synced(&db, &partial).with_context(|| format!("cannot write {}", partial.display()))?;
    reapply_erasures(&partial, &mirror, &live_erasures)?;
    fs::rename(&partial, config.data_dir.join(DB_FILE))?;
    sync_dir(&config.data_dir)?;
    progress(format_args!(
        "restore: done, {} ({db_bytes} bytes of database, {total} segment(s))",
        config.data_dir.display()
    ));
    Ok(())
}

/// Re-applies the erasure list (the data directory's `erasures.list` and the backup's own)
/// to the restored database file `db`, then writes the union back to `mirror`.
fn reapply_erasures(
    db: &Path,
    mirror: &Path,
    live: &[(String, sessiond_store::Millis)],
) -> anyhow::Result<()> {
    let done = crate::engine::reapply_erasures(db, live)?;
    crate::users::write_mirror(mirror, &done.list)
        .with_context(|| format!("cannot write {}", mirror.display()))?;
    if live.is_empty() {
        progress(format_args!(
            "restore: no {ERASURE_FILE} in the data directory: users erased after this backup \
             was taken are NOT erased again (keep that file when emptying the directory)"
        ));
    }
    progress(format_args!(
        "restore: erasure list of {} user(s) re-applied ({} session(s), {} object(s) deleted)",
        done.list.len(),
        done.sessions,
        done.objects
    ));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_stay_inside_their_directory() {
        assert!(key_path("streams-h/abc/0001-0002-ff.seg").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/./b"] {
            assert!(key_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
