//! `Outbox` as the `outbox` table. Session operations queue their event with [`queue`] inside
//! their own writer command, so the event commits (and is fsynced) with the change.

use async_trait::async_trait;
use rusqlite::{params, Connection};
use sessiond_store::{Durability, Outbox, OutboxItem, Result};

use crate::error::limit;
use crate::SqliteEngine;

/// Queues `event` (if any) in the current transaction.
pub(crate) fn queue(conn: &Connection, event: Option<&[u8]>) -> rusqlite::Result<()> {
    if let Some(event) = event {
        conn.prepare_cached("INSERT INTO outbox (data) VALUES (?1)")?
            .execute(params![event])?;
    }
    Ok(())
}

#[async_trait]
impl Outbox for SqliteEngine {
    async fn outbox_push(&self, events: Vec<Vec<u8>>, durability: Durability) -> Result<()> {
        self.write(durability, move |conn| {
            events.iter().try_for_each(|e| queue(conn, Some(e)))
        })
        .await
    }

    async fn outbox_read(&self, max: usize) -> Result<Vec<OutboxItem>> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT seq, data FROM outbox ORDER BY seq LIMIT ?1")?
                .query_map(params![limit(max)], |row| {
                    let seq = row.get::<_, i64>(0)?;
                    Ok(OutboxItem {
                        key: seq.to_string(),
                        data: row.get(1)?,
                        // AUTOINCREMENT: a seq is never handed out twice, even after the
                        // rows above it were deleted.
                        queue: "sqlite".into(),
                        position: u64::try_from(seq).ok(),
                        more_in_queue: false,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map(|mut items| {
                    OutboxItem::mark_limit(&mut items, max);
                    items
                })
        })
        .await
    }

    async fn outbox_remove(&self, keys: &[String]) -> Result<()> {
        let seqs: Vec<i64> = keys.iter().filter_map(|k| k.parse().ok()).collect();
        if seqs.is_empty() {
            return Ok(());
        }
        // A lost removal only delivers again (the outbox is at least once): no fsync wait.
        self.write(Durability::Unconfirmed, move |conn| {
            let mut stmt = conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?;
            seqs.iter()
                .try_for_each(|seq| stmt.execute(params![seq]).map(|_| ()))
        })
        .await
    }
}
