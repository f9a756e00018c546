//! `SessionStore` as SQL over the `sessions` table.
//!
//! Every statement that writes also sets `expires_at = min(idle, absolute)` (the `CHECK`
//! constraint would reject it otherwise), and every read filters `expires_at > now`, so an
//! expired row is invisible whether or not the sweeper got to it. The mutations whose outcome
//! depends on the current row (insert-if-not-live, compare-and-set, forward-only touch) run as
//! writer commands, i.e. inside the writer's transaction, so no other write can interleave.

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, ToSql};
use sessiond_store::{
    Cas, Durability, EventFor, Millis, RecordWrite, Result, Rotation, SessionOrigin, SessionRecord,
    SessionStore,
};

use crate::error::{limit, out_of_range};
use crate::routing::Queuer;
use crate::SqliteEngine;

const COLUMNS: &str = "id, user_id, data, device, created_at, updated_at, last_seen_at, \
                       idle_ttl_ms, idle_expires_at, absolute_expires_at, version, origin, \
                       coalesce(auth_time, created_at)";

fn select(filter: &str) -> String {
    format!("SELECT {COLUMNS} FROM sessions WHERE {filter}")
}

/// Decodes one row selected with [`COLUMNS`].
fn record(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let version: i64 = row.get(10)?;
    Ok(SessionRecord {
        id: row.get(0)?,
        user_id: row.get(1)?,
        data: row.get(2)?,
        device: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        last_seen_at: row.get(6)?,
        idle_ttl_ms: row.get(7)?,
        idle_expires_at: row.get(8)?,
        absolute_expires_at: row.get(9)?,
        version: u64::try_from(version)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(10, version))?,
        origin: match row.get::<_, i64>(11)? {
            0 => SessionOrigin::Service,
            1 => SessionOrigin::OpenRoute,
            other => return Err(rusqlite::Error::IntegralValueOutOfRange(11, other)),
        },
        auth_time: row.get(12)?,
    })
}

fn version_sql(version: u64) -> rusqlite::Result<i64> {
    i64::try_from(version).map_err(|_| out_of_range("session version", version))
}

/// The columns every write sets from a record (all but `id`, `user_id` and `origin`), as
/// `SET` assignments of the parameters `?1`..`?11` that [`Fields::and`] binds.
macro_rules! set_fields {
    () => {
        "data = ?1, device = ?2, created_at = ?3, updated_at = ?4, last_seen_at = ?5,
         idle_ttl_ms = ?6, idle_expires_at = ?7, absolute_expires_at = ?8, version = ?9,
         expires_at = ?10, auth_time = ?11"
    };
}

/// A record's fields bound as `?1`..`?11` (the order of [`set_fields!`]); each statement's
/// own parameters follow from `?12`.
struct Fields<'a> {
    r: &'a SessionRecord,
    version: i64,
    expires_at: Millis,
}

impl<'a> Fields<'a> {
    fn of(r: &'a SessionRecord) -> rusqlite::Result<Self> {
        Ok(Fields {
            r,
            version: version_sql(r.version)?,
            expires_at: r.expires_at(),
        })
    }

    /// The fields, then `more` (`?12` onwards).
    fn and<'b>(&'b self, more: &[&'b dyn ToSql]) -> Vec<&'b dyn ToSql> {
        let r = self.r;
        let mut all: Vec<&dyn ToSql> = vec![
            &r.data,
            &r.device,
            &r.created_at,
            &r.updated_at,
            &r.last_seen_at,
            &r.idle_ttl_ms,
            &r.idle_expires_at,
            &r.absolute_expires_at,
            &self.version,
            &self.expires_at,
            &r.auth_time,
        ];
        all.extend_from_slice(more);
        all
    }
}

/// Stores `r` unless a record with its id is live at `r.created_at` (an expired one is
/// replaced). True if written.
fn insert(conn: &Connection, r: &SessionRecord) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached(concat!(
        "INSERT INTO sessions (data, device, created_at, updated_at, last_seen_at, idle_ttl_ms,
                               idle_expires_at, absolute_expires_at, version, expires_at,
                               auth_time, id, user_id, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO UPDATE SET user_id = ?13, origin = ?14, ",
        set_fields!(),
        " WHERE sessions.expires_at <= ?3"
    ))?;
    let origin = i64::from(r.origin == SessionOrigin::OpenRoute);
    let changed = stmt.execute(params_from_iter(
        Fields::of(r)?.and(&[&r.id, &r.user_id, &origin]),
    ))?;
    Ok(changed == 1)
}

/// Compare-and-set: replaces every field but `id` and `user_id` if the live row has
/// `expected` as its version.
fn replace(
    conn: &Connection,
    r: &SessionRecord,
    expected: u64,
    now: Millis,
) -> rusqlite::Result<Cas> {
    // A version that does not fit the column cannot be stored, so cannot match.
    let expected = i64::try_from(expected).ok();
    let mut update = conn.prepare_cached(concat!(
        "UPDATE sessions SET ",
        set_fields!(),
        " WHERE id = ?12 AND expires_at > ?13 AND version = ?14"
    ))?;
    let changed = match expected {
        None => 0,
        Some(expected) => update.execute(params_from_iter(
            Fields::of(r)?.and(&[&r.id, &now, &expected]),
        ))?,
    };
    if changed == 1 {
        return Ok(Cas::Written);
    }
    let live = conn
        .prepare_cached("SELECT 1 FROM sessions WHERE id = ?1 AND expires_at > ?2")?
        .query_row(params![r.id, now], |_| Ok(()))
        .optional()?;
    Ok(match live {
        Some(()) => Cas::VersionMismatch,
        None => Cas::Missing,
    })
}

/// Moves the live row `old` (at version `expected`) to `r.id` with `r`'s fields, keeping
/// `user_id` and `origin`: one UPDATE of the primary key, inside the writer's transaction.
fn rotate(
    conn: &Connection,
    old: &str,
    r: &SessionRecord,
    expected: u64,
    now: Millis,
) -> rusqlite::Result<Rotation> {
    let live = |id: &str| -> rusqlite::Result<Option<i64>> {
        conn.prepare_cached("SELECT version FROM sessions WHERE id = ?1 AND expires_at > ?2")?
            .query_row(params![id, now], |row| row.get(0))
            .optional()
    };
    match live(old)? {
        None => return Ok(Rotation::Missing),
        Some(v) if i64::try_from(expected).ok() != Some(v) => return Ok(Rotation::VersionMismatch),
        Some(_) => {}
    }
    if live(&r.id)?.is_some() {
        return Ok(Rotation::IdTaken);
    }
    // An expired row under the new id is gone for readers already; make room for the key.
    conn.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute(params![r.id])?;
    conn.prepare_cached(concat!(
        "UPDATE sessions SET id = ?12, ",
        set_fields!(),
        " WHERE id = ?13"
    ))?
    .execute(params_from_iter(Fields::of(r)?.and(&[&r.id, &old])))?;
    Ok(Rotation::Rotated)
}

/// Queues `events(record)` for each record, in order.
fn queue_each(
    conn: &Connection,
    q: &mut Queuer<'_>,
    events: Option<&EventFor>,
    records: &[SessionRecord],
) -> rusqlite::Result<()> {
    let Some(events) = events else {
        return Ok(());
    };
    for r in records {
        q.queue(conn, events(r).as_deref())?;
    }
    Ok(())
}

impl SqliteEngine {
    /// A compare-and-set of a whole record in the writer: `step` writes `w.record` if the
    /// stored version is `w.expected_version`, and `w.event` is queued in the same
    /// transaction when the outcome is `written`.
    async fn record_write<T, F>(&self, w: RecordWrite<'_>, written: T, step: F) -> Result<T>
    where
        T: PartialEq + Send + 'static,
        F: FnOnce(&Connection, &SessionRecord, u64, Millis) -> rusqlite::Result<T> + Send + 'static,
    {
        let record = w.record.clone();
        let (expected, now, event) = (w.expected_version, w.now, w.event);
        self.write_queuing(w.durability, move |conn, q| {
            let outcome = step(conn, &record, expected, now)?;
            if outcome == written {
                q.queue(conn, event.as_deref())?;
            }
            Ok(outcome)
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteEngine {
    async fn insert_session_with(
        &self,
        record: &SessionRecord,
        event: Option<Vec<u8>>,
        durability: Durability,
    ) -> Result<bool> {
        let record = record.clone();
        self.write_queuing(durability, move |conn, q| {
            let written = insert(conn, &record)?;
            if written {
                q.queue(conn, event.as_deref())?;
            }
            Ok(written)
        })
        .await
    }

    async fn get_session(&self, id: &str, now: Millis) -> Result<Option<SessionRecord>> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(&select("id = ?1 AND expires_at > ?2"))?
                .query_row(params![id, now], record)
                .optional()
        })
        .await
    }

    async fn replace_session(&self, w: RecordWrite<'_>) -> Result<Cas> {
        self.record_write(w, Cas::Written, replace).await
    }

    async fn rotate_session(&self, old_id: &str, w: RecordWrite<'_>) -> Result<Rotation> {
        let old_id = old_id.to_owned();
        self.record_write(w, Rotation::Rotated, move |conn, r, expected, now| {
            rotate(conn, &old_id, r, expected, now)
        })
        .await
    }

    async fn touch_session(
        &self,
        id: &str,
        idle_expires_at: Millis,
        last_seen_at: Millis,
        now: Millis,
        durability: Durability,
    ) -> Result<bool> {
        let id = id.to_owned();
        self.write_beside_streams(durability, move |conn| {
            // Right-hand sides see the old row, so both deadlines move forward only.
            let changed = conn
                .prepare_cached(
                    "UPDATE sessions SET
                         idle_expires_at = max(idle_expires_at, ?2),
                         last_seen_at = max(last_seen_at, ?3),
                         expires_at = min(max(idle_expires_at, ?2), absolute_expires_at)
                     WHERE id = ?1 AND expires_at > ?4",
                )?
                .execute(params![id, idle_expires_at, last_seen_at, now])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn delete_session_with(
        &self,
        id: &str,
        now: Millis,
        event: Option<Vec<u8>>,
        durability: Durability,
    ) -> Result<bool> {
        let id = id.to_owned();
        self.write_queuing(durability, move |conn, q| {
            // The row goes either way; only a live one counts as deleted.
            let expires_at: Option<Millis> = conn
                .prepare_cached("DELETE FROM sessions WHERE id = ?1 RETURNING expires_at")?
                .query_row(params![id], |row| row.get(0))
                .optional()?;
            let live = expires_at.is_some_and(|at| at > now);
            if live {
                q.queue(conn, event.as_deref())?;
            }
            Ok(live)
        })
        .await
    }

    async fn list_user_sessions(
        &self,
        user_id: &str,
        now: Millis,
        max: usize,
    ) -> Result<Vec<SessionRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(&select(
                "user_id = ?1 AND expires_at > ?2 ORDER BY created_at, id LIMIT ?3",
            ))?
            .query_map(params![user_id, now, limit(max)], record)?
            .collect()
        })
        .await
    }

    async fn delete_user_sessions_with(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: Millis,
        events: Option<EventFor>,
        durability: Durability,
    ) -> Result<Vec<String>> {
        let user_id = user_id.to_owned();
        let except = except.map(str::to_owned);
        self.write_queuing(durability, move |conn, q| {
            let mut stmt = conn.prepare_cached(&format!(
                "DELETE FROM sessions WHERE user_id = ?1 AND (?2 IS NULL OR id <> ?2)
                 RETURNING {COLUMNS}"
            ))?;
            let mut gone: Vec<SessionRecord> = stmt
                .query_map(params![user_id, except], record)?
                .filter(|r| r.as_ref().map_or(true, |r| !r.is_expired(now)))
                .collect::<rusqlite::Result<_>>()?;
            gone.sort_by(|a, b| a.id.cmp(&b.id));
            queue_each(conn, q, events.as_ref(), &gone)?;
            Ok(gone.into_iter().map(|r| r.id).collect())
        })
        .await
    }

    async fn sweep_sessions_with(
        &self,
        now: Millis,
        batch: usize,
        events: Option<EventFor>,
    ) -> Result<usize> {
        // A lost sweep is redone by the next one: no need to wait for the fsync (its events
        // are lost with it, and queued again by that next sweep).
        self.write_queuing(Durability::Unconfirmed, move |conn, q| {
            let Some(events) = events else {
                return conn
                    .prepare_cached(
                        "DELETE FROM sessions WHERE rowid IN
                             (SELECT rowid FROM sessions WHERE expires_at <= ?1 LIMIT ?2)",
                    )?
                    .execute(params![now, limit(batch)]);
            };
            let gone: Vec<SessionRecord> = conn
                .prepare_cached(&format!(
                    "DELETE FROM sessions WHERE rowid IN
                         (SELECT rowid FROM sessions WHERE expires_at <= ?1 LIMIT ?2)
                     RETURNING {COLUMNS}"
                ))?
                .query_map(params![now, limit(batch)], record)?
                .collect::<rusqlite::Result<_>>()?;
            queue_each(conn, q, Some(&events), &gone)?;
            Ok(gone.len())
        })
        .await
    }
}
