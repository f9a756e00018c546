//! `Outbox` as the `outbox` table. Session operations queue their event inside their own
//! writer command (`routing::Queuer`), so the event commits (and is fsynced) with the change;
//! with a route, the parts it names go into streams in that same command (`routing`).

use async_trait::async_trait;
use rusqlite::params;
use sessiond_store::{Durability, Outbox, OutboxItem, Result};

use crate::error::limit;
use crate::SqliteEngine;

#[async_trait]
impl Outbox for SqliteEngine {
    async fn outbox_push(&self, events: Vec<Vec<u8>>, durability: Durability) -> Result<()> {
        self.write_queuing(durability, move |conn, q| {
            events.iter().try_for_each(|e| q.queue(conn, Some(e)))
        })
        .await
    }

    fn outbox_route(&self, route: std::sync::Arc<dyn sessiond_store::OutboxRoute>) -> bool {
        self.routing.set(route)
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
        let runs = consecutive_runs(keys.iter().filter_map(|k| k.parse().ok()).collect());
        if runs.is_empty() {
            return Ok(());
        }
        // A lost removal only delivers again (the outbox is at least once): no fsync wait.
        self.write_beside_streams(Durability::Unconfirmed, move |conn| {
            let mut stmt = conn.prepare_cached("DELETE FROM outbox WHERE seq BETWEEN ?1 AND ?2")?;
            runs.iter()
                .try_for_each(|(first, last)| stmt.execute(params![first, last]).map(|_| ()))
        })
        .await
    }
}

/// `seqs` as ranges of consecutive numbers, `(first, last)`: a relay pass removes what it
/// read, mostly one unbroken stretch of the table, so one statement per stretch instead of
/// one per event. A range holds only the given seqs, so nothing else is removed.
fn consecutive_runs(mut seqs: Vec<i64>) -> Vec<(i64, i64)> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for seq in seqs {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(seq) => *last = seq,
            _ => runs.push((seq, seq)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    /// Stretches of consecutive seqs, whatever the keys' order and repeats.
    #[test]
    fn removal_ranges_hold_only_the_given_seqs() {
        let runs = super::consecutive_runs(vec![7, 3, 4, 5, 9, 4, 10, i64::MAX, 1]);
        assert_eq!(
            runs,
            [(1, 1), (3, 5), (7, 7), (9, 10), (i64::MAX, i64::MAX)]
        );
        assert!(super::consecutive_runs(Vec::new()).is_empty());
    }
}
