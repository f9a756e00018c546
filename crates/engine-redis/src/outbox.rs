//! `Outbox` as one Redis stream (`XADD` / `XRANGE` / `XDEL`): entry ids are stable handles,
//! so relays on several nodes can remove exactly what they delivered.
//!
//! Session operations queue their event right after their script succeeded (see
//! `sessions.rs`): not yet in the same script, so a crash of this process between the two
//! calls loses that event.

use async_trait::async_trait;
use sessiond_store::{Durability, Outbox, OutboxItem, Result, StoreError};

use crate::RedisEngine;

impl RedisEngine {
    /// Queues `event`, if any.
    pub(crate) async fn queue_event(&self, event: Option<Vec<u8>>) -> Result<()> {
        match event {
            Some(event) => self.outbox_push(vec![event], Durability::Confirmed).await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Outbox for RedisEngine {
    async fn outbox_push(&self, events: Vec<Vec<u8>>, _: Durability) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let key = self.keys.outbox();
        let mut pipe = redis::pipe();
        for event in events {
            pipe.cmd("XADD").arg(&key).arg("*").arg("d").arg(event);
        }
        self.query_pipe::<Vec<String>>("outbox_push", &pipe).await?;
        Ok(())
    }

    async fn outbox_read(&self, limit: usize) -> Result<Vec<OutboxItem>> {
        let cmd = redis::cmd("XRANGE")
            .arg(self.keys.outbox())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .clone();
        // Each entry is [id, [field, value]] with the one field `d`.
        let reply: Vec<(String, Vec<Vec<u8>>)> = self.query("outbox_read", &cmd).await?;
        reply
            .into_iter()
            .map(|(key, mut fields)| match fields.len() {
                2 => Ok(OutboxItem {
                    key,
                    data: fields.swap_remove(1),
                }),
                _ => Err(StoreError::Corrupt("outbox entry without data".into())),
            })
            .collect()
    }

    async fn outbox_remove(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let cmd = redis::cmd("XDEL").arg(self.keys.outbox()).arg(keys).clone();
        self.query::<i64>("outbox_remove", &cmd).await?;
        Ok(())
    }
}
