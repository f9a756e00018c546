//! [`ObjectStore`] on Redis: object state as a STRING, a per-kind ZSET index for listing, and
//! the alarms in three keys sharing one hash tag.
//!
//! Why this shape: state is opaque bytes, so a plain STRING is the cheapest home. Listing in
//! key order with a prefix and a cursor is exactly `ZRANGEBYLEX` on a score-0 ZSET whose
//! members are the raw keys (byte order = the memory engine's `str` order). Alarms need one
//! global order by due time for the runtime's scanner; keeping their records under the same
//! hash tag as that order makes put, guarded delete and "drop every alarm of an object" single
//! atomic scripts. State and index live in different slots: save writes the state first, then
//! the index; delete removes the state first, then the index member and the alarms.

use async_trait::async_trait;
use sessiond_store::{AlarmRecord, Durability, Millis, ObjectStore, Result, StoreError};

use crate::keys::{alarm_member, alarm_object_prefix, lex_prefix_range};
use crate::RedisEngine;

/// Decodes alarm records fetched with `HMGET`; members whose record vanished in between are
/// skipped (they were deleted concurrently).
fn decode_alarms(raw: Vec<Option<Vec<u8>>>) -> Result<Vec<AlarmRecord>> {
    raw.into_iter()
        .flatten()
        .map(|json| {
            serde_json::from_slice(&json)
                .map_err(|e| StoreError::Corrupt(format!("alarm record: {e}")))
        })
        .collect()
}

impl RedisEngine {
    /// Alarm records of `members`, in the same order.
    async fn fetch_alarms(&self, members: &[Vec<u8>]) -> Result<Vec<AlarmRecord>> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = redis::cmd("HMGET")
            .arg(self.keys.alarms_records())
            .arg(members)
            .clone();
        let raw: Vec<Option<Vec<u8>>> = self.query("alarm_fetch", &cmd).await?;
        decode_alarms(raw)
    }

    /// Lex bounds of the alarm members of one object.
    fn object_alarm_range(kind: &str, key: &str) -> (Vec<u8>, Vec<u8>) {
        lex_prefix_range(&alarm_object_prefix(kind, key))
    }
}

#[async_trait]
impl ObjectStore for RedisEngine {
    async fn load_object(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let cmd = redis::cmd("GET")
            .arg(self.keys.object_state(kind, key))
            .clone();
        self.query("object_load", &cmd).await
    }

    async fn save_object(&self, kind: &str, key: &str, state: &[u8], _: Durability) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.object_state(kind, key))
            .arg(state)
            .ignore();
        pipe.cmd("ZADD")
            .arg(self.keys.object_index(kind))
            .arg(0)
            .arg(key)
            .ignore();
        self.query_pipe::<()>("object_save", &pipe).await
    }

    async fn swap_object(
        &self,
        kind: &str,
        key: &str,
        expected: Option<&[u8]>,
        state: Option<&[u8]>,
        _: Durability,
    ) -> Result<bool> {
        let flag = |v: Option<&[u8]>| if v.is_some() { "1" } else { "0" };
        let mut inv = self
            .scripts
            .object_swap
            .key(self.keys.object_state(kind, key));
        inv.arg(flag(expected))
            .arg(expected.unwrap_or_default())
            .arg(flag(state))
            .arg(state.unwrap_or_default());
        let written: i64 = self.eval("object_swap", &inv).await?;
        if written != 1 {
            return Ok(false);
        }
        // The index is another slot: updated after the state, like `save_object` does.
        let index = self.keys.object_index(kind);
        let cmd = match state {
            Some(_) => redis::cmd("ZADD").arg(index).arg(0).arg(key).clone(),
            None => redis::cmd("ZREM").arg(index).arg(key).clone(),
        };
        self.query::<i64>("object_index", &cmd).await?;
        Ok(true)
    }

    async fn delete_object(&self, kind: &str, key: &str, _: Durability) -> Result<bool> {
        let del = redis::cmd("DEL")
            .arg(self.keys.object_state(kind, key))
            .clone();
        let existed: i64 = self.query("object_delete", &del).await?;
        let zrem = redis::cmd("ZREM")
            .arg(self.keys.object_index(kind))
            .arg(key)
            .clone();
        self.query::<i64>("object_unindex", &zrem).await?;
        let (min, max) = Self::object_alarm_range(kind, key);
        let mut inv = self.scripts.alarm_drop_object.key(self.keys.alarms_due());
        inv.key(self.keys.alarms_lex())
            .key(self.keys.alarms_records())
            .arg(min)
            .arg(max);
        self.eval::<i64>("alarm_drop_object", &inv).await?;
        Ok(existed == 1)
    }

    async fn list_objects(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (mut min, max) = lex_prefix_range(prefix.as_bytes());
        if let Some(after) = after {
            // Every key with the prefix is > `after` when `after` sorts below the prefix.
            if after >= prefix {
                min = [b"(".as_slice(), after.as_bytes()].concat();
            }
        }
        let cmd = redis::cmd("ZRANGEBYLEX")
            .arg(self.keys.object_index(kind))
            .arg(min)
            .arg(max)
            .arg("LIMIT")
            .arg(0)
            .arg(crate::redis_count(limit))
            .clone();
        self.query("object_list", &cmd).await
    }

    async fn put_alarm(&self, alarm: &AlarmRecord, _: Durability) -> Result<()> {
        let json = serde_json::to_string(alarm)
            .map_err(|e| StoreError::Corrupt(format!("alarm record: {e}")))?;
        let mut inv = self.scripts.alarm_put.key(self.keys.alarms_due());
        inv.key(self.keys.alarms_lex())
            .key(self.keys.alarms_records())
            .arg(alarm_member(&alarm.kind, &alarm.key, &alarm.name))
            .arg(alarm.due_at)
            .arg(json);
        self.eval::<i64>("alarm_put", &inv).await?;
        Ok(())
    }

    async fn delete_alarm(
        &self,
        kind: &str,
        key: &str,
        name: &str,
        due_at: Option<Millis>,
        _: Durability,
    ) -> Result<bool> {
        let mut inv = self.scripts.alarm_delete.key(self.keys.alarms_due());
        inv.key(self.keys.alarms_lex())
            .key(self.keys.alarms_records())
            .arg(alarm_member(kind, key, name))
            .arg(due_at.map(|d| d.to_string()).unwrap_or_default());
        let deleted: i64 = self.eval("alarm_delete", &inv).await?;
        Ok(deleted == 1)
    }

    async fn reschedule_alarm(
        &self,
        alarm: &AlarmRecord,
        expected_due_at: Millis,
        _: Durability,
    ) -> Result<bool> {
        let json = serde_json::to_string(alarm)
            .map_err(|e| StoreError::Corrupt(format!("alarm record: {e}")))?;
        let mut inv = self.scripts.alarm_reschedule.key(self.keys.alarms_due());
        inv.key(self.keys.alarms_lex())
            .key(self.keys.alarms_records())
            .arg(alarm_member(&alarm.kind, &alarm.key, &alarm.name))
            .arg(expected_due_at)
            .arg(alarm.due_at)
            .arg(json);
        let changed: i64 = self.eval("alarm_reschedule", &inv).await?;
        Ok(changed == 1)
    }

    async fn object_alarms(&self, kind: &str, key: &str) -> Result<Vec<AlarmRecord>> {
        let (min, max) = Self::object_alarm_range(kind, key);
        let cmd = redis::cmd("ZRANGEBYLEX")
            .arg(self.keys.alarms_lex())
            .arg(min)
            .arg(max)
            .clone();
        let members: Vec<Vec<u8>> = self.query("alarm_list", &cmd).await?;
        self.fetch_alarms(&members).await
    }

    async fn due_alarms(&self, until: Millis, limit: usize) -> Result<Vec<AlarmRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cmd = redis::cmd("ZRANGE")
            .arg(self.keys.alarms_due())
            .arg("-inf")
            .arg(until)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(crate::redis_count(limit))
            .clone();
        let members: Vec<Vec<u8>> = self.query("alarm_due", &cmd).await?;
        // The records are read in a second round trip: another node may have claimed one in
        // between (its record then carries the claim's future due time). Such a record is not
        // due; handing it out would let this node "re-claim" it with that very due time.
        let mut due = self.fetch_alarms(&members).await?;
        due.retain(|alarm| alarm.due_at <= until);
        Ok(due)
    }

    async fn next_alarm_at(&self) -> Result<Option<Millis>> {
        let cmd = redis::cmd("ZRANGE")
            .arg(self.keys.alarms_due())
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .clone();
        let first: Vec<(Vec<u8>, f64)> = self.query("alarm_next", &cmd).await?;
        Ok(first.first().map(|(_, due)| *due as Millis))
    }
}
