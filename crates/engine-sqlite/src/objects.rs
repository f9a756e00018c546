//! `ObjectStore` as SQL over the `objects` and `alarms` tables.
//!
//! Listing walks the `(kind, key)` primary key as a range: a key prefix becomes the half-open
//! interval `[prefix, successor(prefix))` (see [`prefix_end`]), so the b-tree seeks straight to
//! the first match and stops after the last, whatever the number of other keys. Text compares
//! with SQLite's BINARY collation, i.e. byte order, as the trait promises. Alarms are ordered
//! by `(due_at, kind, key, name)`, which is the order of the `alarms_by_due` index (a
//! `WITHOUT ROWID` table's index ends with the primary key).

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use sessiond_store::{AlarmRecord, Durability, Millis, ObjectStore, Result};

use crate::error::limit;
use crate::SqliteEngine;

const ALARM_COLUMNS: &str = "kind, key, name, due_at, attempt, payload";

fn alarm(row: &Row<'_>) -> rusqlite::Result<AlarmRecord> {
    Ok(AlarmRecord {
        kind: row.get(0)?,
        key: row.get(1)?,
        name: row.get(2)?,
        due_at: row.get(3)?,
        attempt: row.get(4)?,
        payload: row.get(5)?,
    })
}

/// The least string greater than every string that starts with `prefix`, or `None` if there is
/// none (empty prefix, or only `char::MAX`s). UTF-8 byte order equals code point order, so
/// replacing the last character that has a successor by that successor (and dropping what
/// follows) gives the bound: no string lies between `prefix + anything` and it.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if next == 0xD800 {
            next = 0xE000; // skip the surrogate gap, which holds no chars
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The stored state of object `(kind, key)`, if any (in whatever transaction `conn` is in).
pub(crate) fn stored_state(
    conn: &Connection,
    kind: &str,
    key: &str,
) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT state FROM objects WHERE kind = ?1 AND key = ?2")?
        .query_row(params![kind, key], |row| row.get(0))
        .optional()
}

#[async_trait]
impl ObjectStore for SqliteEngine {
    async fn load_object(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        self.read(move |conn| stored_state(conn, &kind, &key)).await
    }

    async fn save_object(
        &self,
        kind: &str,
        key: &str,
        state: &[u8],
        durability: Durability,
    ) -> Result<()> {
        let (kind, key, state) = (kind.to_owned(), key.to_owned(), state.to_vec());
        self.write_beside_streams(durability, move |conn| {
            conn.prepare_cached(
                "INSERT INTO objects (kind, key, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, key) DO UPDATE SET state = excluded.state",
            )?
            .execute(params![kind, key, state])
            .map(|_| ())
        })
        .await
    }

    async fn swap_object(
        &self,
        kind: &str,
        key: &str,
        expected: Option<&[u8]>,
        state: Option<&[u8]>,
        durability: Durability,
    ) -> Result<bool> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        let (expected, state) = (expected.map(<[u8]>::to_vec), state.map(<[u8]>::to_vec));
        // The single writer runs this closure alone, so read-compare-write is atomic.
        self.write_beside_streams(durability, move |conn| {
            if stored_state(conn, &kind, &key)? != expected {
                return Ok(false);
            }
            match state {
                Some(state) => conn
                    .prepare_cached(
                        "INSERT INTO objects (kind, key, state) VALUES (?1, ?2, ?3)
                         ON CONFLICT (kind, key) DO UPDATE SET state = excluded.state",
                    )?
                    .execute(params![kind, key, state])?,
                None => conn
                    .prepare_cached("DELETE FROM objects WHERE kind = ?1 AND key = ?2")?
                    .execute(params![kind, key])?,
            };
            Ok(true)
        })
        .await
    }

    async fn delete_object(&self, kind: &str, key: &str, durability: Durability) -> Result<bool> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        self.write_beside_streams(durability, move |conn| {
            conn.prepare_cached("DELETE FROM alarms WHERE kind = ?1 AND key = ?2")?
                .execute(params![kind, key])?;
            let deleted = conn
                .prepare_cached("DELETE FROM objects WHERE kind = ?1 AND key = ?2")?
                .execute(params![kind, key])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn list_objects(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>> {
        // Lower bound: `key > after` when `after >= prefix` (it implies `key >= prefix`),
        // else `key >= prefix` (it implies `key > after`).
        let (lower_op, lower) = match after {
            Some(after) if after >= prefix => (">", after.to_owned()),
            _ => (">=", prefix.to_owned()),
        };
        let upper = prefix_end(prefix);
        let sql = format!(
            "SELECT key FROM objects WHERE kind = ?1 AND key {lower_op} ?2 {} \
             ORDER BY key LIMIT ?3",
            if upper.is_some() { "AND key < ?4" } else { "" }
        );
        let kind = kind.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let key = |row: &Row<'_>| row.get::<_, String>(0);
            let rows = match &upper {
                Some(upper) => stmt.query_map(params![kind, lower, limit(max), upper], key)?,
                None => stmt.query_map(params![kind, lower, limit(max)], key)?,
            };
            rows.collect()
        })
        .await
    }

    async fn put_alarm(&self, alarm: &AlarmRecord, durability: Durability) -> Result<()> {
        let a = alarm.clone();
        self.write_beside_streams(durability, move |conn| {
            conn.prepare_cached(
                "INSERT INTO alarms (kind, key, name, due_at, attempt, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (kind, key, name) DO UPDATE SET due_at = excluded.due_at,
                     attempt = excluded.attempt, payload = excluded.payload",
            )?
            .execute(params![
                a.kind, a.key, a.name, a.due_at, a.attempt, a.payload
            ])
            .map(|_| ())
        })
        .await
    }

    async fn delete_alarm(
        &self,
        kind: &str,
        key: &str,
        name: &str,
        due_at: Option<Millis>,
        durability: Durability,
    ) -> Result<bool> {
        let (kind, key, name) = (kind.to_owned(), key.to_owned(), name.to_owned());
        self.write_beside_streams(durability, move |conn| {
            // With `due_at`, only the alarm still armed for that time goes: a handler that
            // re-armed it meanwhile keeps its new alarm.
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM alarms WHERE kind = ?1 AND key = ?2 AND name = ?3
                         AND (?4 IS NULL OR due_at = ?4)",
                )?
                .execute(params![kind, key, name, due_at])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn reschedule_alarm(
        &self,
        alarm: &AlarmRecord,
        expected_due_at: Millis,
        durability: Durability,
    ) -> Result<bool> {
        let a = alarm.clone();
        self.write_beside_streams(durability, move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE alarms SET due_at = ?4, attempt = ?5, payload = ?6
                     WHERE kind = ?1 AND key = ?2 AND name = ?3 AND due_at = ?7",
                )?
                .execute(params![
                    a.kind,
                    a.key,
                    a.name,
                    a.due_at,
                    a.attempt,
                    a.payload,
                    expected_due_at
                ])?;
            Ok(changed > 0)
        })
        .await
    }

    async fn object_alarms(&self, kind: &str, key: &str) -> Result<Vec<AlarmRecord>> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {ALARM_COLUMNS} FROM alarms WHERE kind = ?1 AND key = ?2 ORDER BY name"
            ))?
            .query_map(params![kind, key], alarm)?
            .collect()
        })
        .await
    }

    async fn due_alarms(&self, until: Millis, max: usize) -> Result<Vec<AlarmRecord>> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {ALARM_COLUMNS} FROM alarms WHERE due_at <= ?1
                 ORDER BY due_at, kind, key, name LIMIT ?2"
            ))?
            .query_map(params![until, limit(max)], alarm)?
            .collect()
        })
        .await
    }

    async fn next_alarm_at(&self) -> Result<Option<Millis>> {
        self.read(|conn| {
            conn.prepare_cached("SELECT min(due_at) FROM alarms")?
                .query_row([], |row| row.get(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_successor() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("user:").as_deref(), Some("user;"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        let end = prefix_end("é").unwrap_or_default();
        assert!("é\u{10FFFF}zzz" < end.as_str() && "ê" >= end.as_str());
    }
}
