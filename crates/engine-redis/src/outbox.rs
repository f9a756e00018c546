//! `Outbox` on Redis: one Redis stream per slot (`{o:<n>}:outbox`, see `slots::outbox_tag`),
//! written by the session scripts themselves, so an event is queued in the same script as
//! the change it records, even on Redis Cluster (a script touches one slot).
//!
//! Readers find the streams through an index set (`outbox:index`, another slot), which a
//! session operation updates right after its script. A process killed between the two leaves
//! a stream the index does not name; each handle therefore scans for outbox streams once,
//! at its first read, and indexes what it finds. Entry ids are stable handles, so relays on
//! several nodes remove exactly what they delivered (`<stream key>\n<entry id>`).
//!
//! The relay lease is one key (`{relay}:lease`, one slot on Redis Cluster) holding the
//! holder's name with a PEXPIRE; one script takes it when it is free and renews it for its
//! holder, so a pass costs one round trip for the lease whether it holds it or not.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use sessiond_store::{Durability, Outbox, OutboxItem, Result, StoreError};

use crate::RedisEngine;

impl RedisEngine {
    /// Names `outbox` in the index (after a script queued an event in it).
    pub(crate) async fn index_outbox(&self, outbox: &str) -> Result<()> {
        let cmd = redis::cmd("SADD")
            .arg(self.keys.outbox_index())
            .arg(outbox)
            .clone();
        self.query::<i64>("outbox_index", &cmd).await?;
        Ok(())
    }

    /// Indexes every outbox stream that exists (once per handle).
    async fn rediscover_outboxes(&self) -> Result<()> {
        if self.outbox_rediscovered.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let con = self.con()?;
        let masters = self.timed("outbox_nodes", con.masters()).await?;
        for node in &masters {
            let mut cursor = 0u64;
            loop {
                let scan = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(self.keys.outbox_pattern())
                    .arg("COUNT")
                    .arg(1000)
                    .arg("TYPE")
                    .arg("stream")
                    .clone();
                let (next, keys): (u64, Vec<String>) =
                    self.timed("outbox_scan", con.query_on(node, &scan)).await?;
                for key in keys {
                    self.index_outbox(&key).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }
}

/// The queue's short name: the hash tag of its stream key (`o:<n>`), the part that differs
/// between the queues of one deployment.
fn queue_name(stream: &str) -> String {
    match (stream.find('{'), stream.rfind('}')) {
        (Some(open), Some(close)) if open < close => stream[open + 1..close].to_string(),
        _ => stream.to_string(),
    }
}

/// An entry id `<ms>-<n>` as one number that orders like the id (`ms * 1000 + n`, below
/// 2^53 for the next two centuries): Redis hands out increasing ids per stream, also after
/// deletions, so the position is never reused. `None` for a thousandth entry within one
/// millisecond of one stream, which the number has no room for.
fn position(id: &str) -> Option<u64> {
    let (ms, n) = id.split_once('-')?;
    let (ms, n): (u64, u64) = (ms.parse().ok()?, n.parse().ok()?);
    if n >= 1000 {
        return None;
    }
    ms.checked_mul(1000)?.checked_add(n)
}

/// Each queue's share of a read of `limit` events over `queues` queues (at least one each).
fn per_queue(limit: usize, queues: usize) -> usize {
    limit.div_ceil(queues.max(1)).max(1)
}

fn item(stream: &str, id: &str, data: Vec<u8>) -> OutboxItem {
    OutboxItem {
        key: format!("{stream}\n{id}"),
        data,
        queue: queue_name(stream),
        position: position(id),
        more_in_queue: false,
    }
}

/// Marks the last item of a queue whose read (`read` events, the last ones of `items`) was
/// cut by its share.
fn mark_cut(items: &mut [OutboxItem], read: usize, per_queue: usize) {
    if read >= per_queue {
        if let Some(last) = items.last_mut() {
            last.more_in_queue = true;
        }
    }
}

impl RedisEngine {
    /// Every queue's oldest events in one script (standalone servers).
    async fn outbox_snapshot(&self, limit: usize) -> Result<Vec<OutboxItem>> {
        let mut inv = self.scripts.outbox_read.prepare_invoke();
        inv.key(self.keys.outbox_index()).arg(limit);
        let reply: Vec<Vec<u8>> = self.eval("outbox_read", &inv).await?;
        let mut reply = reply.into_iter();
        let per_queue: usize = reply
            .next()
            .and_then(|n| std::str::from_utf8(&n).ok()?.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("outbox read without its share".into()))?;
        let text = |bytes: Vec<u8>| {
            String::from_utf8(bytes)
                .map_err(|_| StoreError::Corrupt("outbox name not UTF-8".into()))
        };
        let mut items: Vec<OutboxItem> = Vec::new();
        let (mut current, mut read) = (String::new(), 0);
        while let Some(stream) = reply.next() {
            let (Some(id), Some(data)) = (reply.next(), reply.next()) else {
                return Err(StoreError::Corrupt("short outbox read".into()));
            };
            let (stream, id) = (text(stream)?, text(id)?);
            if stream != current {
                mark_cut(&mut items, read, per_queue);
                (current, read) = (stream, 0);
            }
            items.push(item(&current, &id, data));
            read += 1;
        }
        mark_cut(&mut items, read, per_queue);
        Ok(items)
    }
}

#[async_trait]
impl Outbox for RedisEngine {
    async fn outbox_push(&self, events: Vec<Vec<u8>>, _: Durability) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // Not tied to a session: any one stream keeps them in order.
        let key = self.keys.outbox_in_slot(0);
        let mut pipe = redis::pipe();
        for event in events {
            pipe.cmd("XADD").arg(&key).arg("*").arg("d").arg(event);
        }
        self.query_pipe::<Vec<String>>("outbox_push", &pipe).await?;
        self.index_outbox(&key).await
    }

    async fn outbox_read(&self, limit: usize) -> Result<Vec<OutboxItem>> {
        self.rediscover_outboxes().await?;
        let limit = limit.max(1);
        if !self.is_cluster() {
            return self.outbox_snapshot(limit).await;
        }
        // A cluster's queues are on several masters: no one step reads them all, so they are
        // read one after another (docs/sessions.md, "Order", says what that allows).
        let cmd = redis::cmd("SMEMBERS").arg(self.keys.outbox_index()).clone();
        let mut streams: Vec<String> = self.query("outbox_list", &cmd).await?;
        streams.sort();
        let per_queue = per_queue(limit, streams.len());
        let mut items = Vec::new();
        for stream in streams {
            let cmd = redis::cmd("XRANGE")
                .arg(&stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(per_queue)
                .clone();
            // Each entry is [id, [field, value]] with the one field `d`.
            let entries: Vec<(String, Vec<Vec<u8>>)> = self.query("outbox_read", &cmd).await?;
            let read = entries.len();
            for (id, mut fields) in entries {
                if fields.len() != 2 {
                    return Err(StoreError::Corrupt("outbox entry without data".into()));
                }
                items.push(item(&stream, &id, fields.swap_remove(1)));
            }
            mark_cut(&mut items, read, per_queue);
        }
        Ok(items)
    }

    async fn outbox_remove(&self, keys: &[String]) -> Result<()> {
        let mut per_stream: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for key in keys {
            if let Some((stream, id)) = key.split_once('\n') {
                per_stream.entry(stream).or_default().push(id);
            }
        }
        for (stream, ids) in per_stream {
            let cmd = redis::cmd("XDEL").arg(stream).arg(&ids).clone();
            self.query::<i64>("outbox_remove", &cmd).await?;
            // An empty stream leaves the index; a script that queued meanwhile re-adds it
            // (its SADD comes after its XADD), and so does this re-check.
            let len = redis::cmd("XLEN").arg(stream).clone();
            if self.query::<i64>("outbox_len", &len).await? == 0 {
                let srem = redis::cmd("SREM")
                    .arg(self.keys.outbox_index())
                    .arg(stream)
                    .clone();
                self.query::<i64>("outbox_unindex", &srem).await?;
                if self.query::<i64>("outbox_len", &len).await? > 0 {
                    self.index_outbox(stream).await?;
                }
            }
        }
        Ok(())
    }

    async fn outbox_lease(&self, holder: &str, ttl_ms: u64) -> Result<bool> {
        let mut inv = self.scripts.relay_lease.prepare_invoke();
        inv.key(self.keys.relay_lease())
            .arg(holder)
            .arg(ttl_ms.max(1));
        let held: i64 = self.eval("relay_lease", &inv).await?;
        Ok(held == 1)
    }

    async fn outbox_lease_release(&self, holder: &str) -> Result<()> {
        let mut inv = self.scripts.relay_release.prepare_invoke();
        inv.key(self.keys.relay_lease()).arg(holder);
        self.eval::<i64>("relay_release", &inv).await?;
        Ok(())
    }
}
