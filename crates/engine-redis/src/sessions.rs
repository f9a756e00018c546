//! [`SessionStore`] on Redis: one HASH per session plus a per-user ZSET index.
//!
//! Why this shape: the hash carries a native `PEXPIREAT` a grace after the record's earliest
//! deadline (the expiry sweep, `session_expiry`, normally ends it first, with its event);
//! every change of one session is one Lua script on that key (atomic compare-and-set). The
//! per-user index, the expiry index and the outbox index live under other hash tags. On a
//! standalone server the session script writes them too (every key passed in `KEYS`), so a
//! session write is one round trip. On Redis Cluster a script cannot reach other slots, so
//! they are separate calls, ordered so readers stay correct: insert writes the expiry entry
//! first, then the hash, then the user's index; deletes remove the hash first, then the index
//! entry. Readers of the index check every member against its hash (gone, expired or owned by
//! someone else = not listed) and lazily `ZREM` members whose hash is gone, so a crash between
//! two calls never shows a session that does not exist.

use std::collections::HashMap;

use async_trait::async_trait;
use sessiond_store::{
    Cas, DataEvent, DataUpdate, DataWrite, Deletion, Durability, EventFor, Millis, RecordWrite,
    Result, Rotation, SessionOrigin, SessionRecord, SessionStore, StoreError,
};

use crate::{lock, parse_num, parse_text, RedisEngine};

/// How many index members one listing round trip fetches.
const LIST_PAGE: usize = 128;

/// Field/value pairs of a record, without `user_id` (added by insert only).
fn record_fields(r: &SessionRecord) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("data", r.data.clone()),
        ("created_at", r.created_at.to_string()),
        ("updated_at", r.updated_at.to_string()),
        ("last_seen_at", r.last_seen_at.to_string()),
        ("idle_ttl_ms", r.idle_ttl_ms.to_string()),
        ("idle_expires_at", r.idle_expires_at.to_string()),
        ("absolute_expires_at", r.absolute_expires_at.to_string()),
        ("version", r.version.to_string()),
        ("auth_time", r.auth_time.to_string()),
    ];
    if let Some(device) = &r.device {
        f.push(("device", device.clone()));
    }
    f
}

/// Decodes a session hash (`HGETALL` reply); `None` when the hash does not exist.
pub(crate) fn decode(id: &str, mut h: HashMap<String, Vec<u8>>) -> Result<Option<SessionRecord>> {
    if h.is_empty() {
        return Ok(None);
    }
    let mut take = |name: &str| {
        h.remove(name)
            .ok_or_else(|| StoreError::Corrupt(format!("session field {name} missing")))
    };
    let data = parse_text("data", take("data")?)?;
    let created_at = parse_num("created_at", &take("created_at")?)?;
    let updated_at = parse_num("updated_at", &take("updated_at")?)?;
    let last_seen_at = parse_num("last_seen_at", &take("last_seen_at")?)?;
    let idle_ttl_ms = parse_num("idle_ttl_ms", &take("idle_ttl_ms")?)?;
    let idle_expires_at = parse_num("idle_expires_at", &take("idle_expires_at")?)?;
    let absolute_expires_at = parse_num("absolute_expires_at", &take("absolute_expires_at")?)?;
    let version = parse_num("version", &take("version")?)?;
    // Hashes written before auth_time was recorded read their creation time.
    let auth_time = match h.remove("auth_time") {
        None => created_at,
        Some(text) => parse_num("auth_time", &text)?,
    };
    let user_id = h
        .remove("user_id")
        .map(|u| parse_text("user_id", u))
        .transpose()?;
    let device = h
        .remove("device")
        .map(|d| parse_text("device", d))
        .transpose()?;
    // Hashes written before origins were recorded read as service-created.
    let origin = match h.remove("origin") {
        None => SessionOrigin::Service,
        Some(text) => {
            let text = parse_text("origin", text)?;
            SessionOrigin::parse(&text)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown session origin {text}")))?
        }
    };
    Ok(Some(SessionRecord {
        id: id.to_string(),
        user_id,
        data,
        device,
        created_at,
        updated_at,
        last_seen_at,
        idle_ttl_ms,
        idle_expires_at,
        absolute_expires_at,
        version,
        origin,
        auth_time,
    }))
}

impl RedisEngine {
    /// Deletes one session (optionally only if owned by `owner`) and its index entry.
    /// Returns whether a live record was deleted.
    async fn delete_one(
        &self,
        id: &str,
        owner: Option<&str>,
        now: Millis,
        event: Option<Vec<u8>>,
    ) -> Result<bool> {
        let cluster = self.is_cluster();
        let outbox = self.keys.outbox_of_session(id);
        let mut inv = self.scripts.session_delete.key(self.keys.session(id));
        inv.key(&outbox);
        if !cluster {
            inv.key(self.keys.outbox_index());
            if let Some(owner) = owner {
                inv.key(self.keys.user_sessions(owner));
            }
        }
        inv.arg(now)
            .arg(if owner.is_some() { "1" } else { "0" })
            .arg(owner.unwrap_or(""))
            .arg(event.as_deref().unwrap_or_default())
            .arg(id);
        let (live, has_user, user, flag, unindexed): (i64, i64, String, String, i64) =
            self.eval("session_delete", &inv).await?;
        let mut follow = redis::pipe();
        self.index_outbox_if(&mut follow, &flag, &outbox);
        if has_user == 1 && unindexed == 0 {
            follow
                .cmd("ZREM")
                .arg(self.keys.user_sessions(&user))
                .arg(id);
        }
        self.follow_up("session_unindex", &follow).await?;
        Ok(live == 1)
    }

    /// Adds "name `outbox` in the outbox index" to `pipe` when a session script asked for it
    /// (its outbox flag is `1`: on Redis Cluster, where the index lives in another slot).
    fn index_outbox_if(&self, pipe: &mut redis::Pipeline, flag: &str, outbox: &str) {
        if flag == "1" {
            pipe.cmd("SADD").arg(self.keys.outbox_index()).arg(outbox);
        }
    }

    /// Sends what a session script left to do in other slots (Redis Cluster, or a user index
    /// the caller could not name), as one pipeline; nothing when there is nothing.
    async fn follow_up(&self, op: &'static str, pipe: &redis::Pipeline) -> Result<()> {
        if !pipe.is_empty() {
            self.query_pipe::<redis::Value>(op, pipe).await?;
        }
        Ok(())
    }

    /// Inserts `record` (see [`SessionStore::insert_session_with`]); with `room`, only when
    /// its user's index names fewer sessions (`None`, nothing written, otherwise).
    async fn insert(
        &self,
        record: &SessionRecord,
        room: Option<usize>,
        event: Option<&[u8]>,
    ) -> Result<Option<bool>> {
        // On a standalone server the script writes every index itself (one round trip); on a
        // cluster the expiry entry goes first and the user's index after (other slots).
        let cluster = self.is_cluster();
        if cluster {
            self.index_expiry(&record.id, record.expires_at()).await?;
        }
        let outbox = self.keys.outbox_of_session(&record.id);
        let mut inv = self
            .scripts
            .session_insert
            .key(self.keys.session(&record.id));
        inv.key(&outbox);
        if !cluster {
            inv.key(self.keys.outbox_index());
            inv.key(self.keys.session_expiry(&record.id));
            if let Some(user) = &record.user_id {
                inv.key(self.keys.user_sessions(user));
            }
        }
        inv.arg(record.created_at)
            .arg(record.expires_at())
            .arg(event.unwrap_or_default())
            .arg(&record.id)
            .arg(room.map(|n| n.to_string()).unwrap_or_default());
        for (name, value) in record_fields(record) {
            inv.arg(name).arg(value);
        }
        if let Some(user) = &record.user_id {
            inv.arg("user_id").arg(user);
        }
        // Written at insert only (like `user_id`): a replace never changes how a session began.
        inv.arg("origin").arg(record.origin.as_str());
        let (written, flag): (i64, String) = self.eval("session_insert", &inv).await?;
        match written {
            1 => {}
            2 => return Ok(None),
            _ => return Ok(Some(false)),
        }
        if cluster {
            let mut follow = redis::pipe();
            self.index_outbox_if(&mut follow, &flag, &outbox);
            if let Some(user) = &record.user_id {
                follow
                    .cmd("ZADD")
                    .arg(self.keys.user_sessions(user))
                    .arg(record.created_at)
                    .arg(&record.id);
            }
            self.follow_up("session_index", &follow).await?;
        }
        Ok(Some(true))
    }

    /// Fetches the hashes of `ids` in one round trip.
    pub(crate) async fn fetch_sessions(
        &self,
        ids: &[String],
    ) -> Result<Vec<HashMap<String, Vec<u8>>>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.keys.session(id));
        }
        self.query_pipe("session_fetch", &pipe).await
    }
}

#[async_trait]
impl SessionStore for RedisEngine {
    async fn insert_session_with(
        &self,
        record: &SessionRecord,
        event: Option<Vec<u8>>,
        _: Durability,
    ) -> Result<bool> {
        Ok(self.insert(record, None, event.as_deref()).await? == Some(true))
    }

    async fn get_session(&self, id: &str, now: Millis) -> Result<Option<SessionRecord>> {
        let cmd = redis::cmd("HGETALL").arg(self.keys.session(id)).clone();
        let h: HashMap<String, Vec<u8>> = self.query("session_get", &cmd).await?;
        Ok(decode(id, h)?.filter(|r| !r.is_expired(now)))
    }

    async fn replace_session(&self, w: RecordWrite<'_>) -> Result<Cas> {
        let record = w.record;
        let outbox = self.keys.outbox_of_session(&record.id);
        let mut inv = self
            .scripts
            .session_replace
            .key(self.keys.session(&record.id));
        inv.key(&outbox);
        if !self.is_cluster() {
            inv.key(self.keys.outbox_index());
        }
        inv.arg(w.now)
            .arg(w.expected_version.to_string())
            .arg(record.expires_at())
            .arg(if record.device.is_some() { "1" } else { "0" })
            .arg(w.event.as_deref().unwrap_or_default());
        for (name, value) in record_fields(record) {
            inv.arg(name).arg(value);
        }
        let (outcome, flag): (i64, String) = self.eval("session_replace", &inv).await?;
        Ok(match outcome {
            2 => {
                let mut follow = redis::pipe();
                self.index_outbox_if(&mut follow, &flag, &outbox);
                self.follow_up("outbox_index", &follow).await?;
                Cas::Written
            }
            1 => Cas::VersionMismatch,
            _ => Cas::Missing,
        })
    }

    async fn update_session_data(&self, w: DataWrite<'_>) -> Result<DataUpdate> {
        self.update_data(w).await
    }

    async fn rotate_session(&self, old_id: &str, w: RecordWrite<'_>) -> Result<Rotation> {
        let record = w.record;
        let cluster = self.is_cluster();
        if cluster {
            self.index_expiry(&record.id, record.expires_at()).await?;
        }
        let outbox = self.keys.outbox_of_session(old_id);
        let mut inv = self.scripts.session_rotate.key(self.keys.session(old_id));
        inv.key(self.keys.session(&record.id));
        inv.key(&outbox);
        if !cluster {
            inv.key(self.keys.outbox_index());
            inv.key(self.keys.session_expiry(&record.id));
            if let Some(user) = &record.user_id {
                inv.key(self.keys.user_sessions(user));
            }
        }
        inv.arg(w.now)
            .arg(w.expected_version.to_string())
            .arg(record.expires_at())
            .arg(w.event.as_deref().unwrap_or_default())
            .arg(old_id)
            .arg(&record.id)
            .arg(record.user_id.as_deref().unwrap_or(""))
            .arg(record.created_at);
        for (name, value) in record_fields(record) {
            inv.arg(name).arg(value);
        }
        let (outcome, user, flag, reindexed): (i64, String, String, i64) =
            self.eval("session_rotate", &inv).await?;
        match outcome {
            2 => {}
            1 => return Ok(Rotation::VersionMismatch),
            3 => return Ok(Rotation::IdTaken),
            _ => return Ok(Rotation::Missing),
        }
        let mut follow = redis::pipe();
        self.index_outbox_if(&mut follow, &flag, &outbox);
        if !user.is_empty() && reindexed == 0 {
            // The index lives in the user's slot: add the new member before dropping the old
            // (listing skips and lazily removes members whose hash is gone).
            let index = self.keys.user_sessions(&user);
            follow
                .cmd("ZADD")
                .arg(&index)
                .arg(record.created_at)
                .arg(&record.id)
                .cmd("ZREM")
                .arg(&index)
                .arg(old_id);
        }
        self.follow_up("session_reindex", &follow).await?;
        Ok(Rotation::Rotated)
    }

    fn rotation_id(&self, old_id: &str, fresh: String) -> String {
        crate::keys::session_id_in_slot_of(old_id, &fresh)
    }

    async fn touch_session(
        &self,
        id: &str,
        idle_expires_at: Millis,
        last_seen_at: Millis,
        now: Millis,
        _: Durability,
    ) -> Result<bool> {
        let mut inv = self.scripts.session_touch.key(self.keys.session(id));
        inv.arg(now).arg(idle_expires_at).arg(last_seen_at).arg("0");
        let touched: i64 = self.eval("session_touch", &inv).await?;
        Ok(touched == 1)
    }

    async fn touch_session_now(
        &self,
        id: &str,
        now: Millis,
        _: Durability,
    ) -> Result<Option<SessionRecord>> {
        let mut inv = self.scripts.session_touch.key(self.keys.session(id));
        inv.arg(now).arg("").arg(now).arg("1");
        let hash: HashMap<String, Vec<u8>> = self.eval("session_touch", &inv).await?;
        decode(id, hash)
    }

    async fn delete_session_checked(
        &self,
        id: &str,
        if_match: Option<u64>,
        now: Millis,
        event: Option<&DataEvent>,
        _: Durability,
    ) -> Result<Deletion> {
        self.delete_checked(id, if_match, now, event).await
    }

    async fn insert_session_if_room(
        &self,
        record: &SessionRecord,
        room: usize,
        event: Option<&[u8]>,
        _: Durability,
    ) -> Result<Option<bool>> {
        // The user's index is in another slot on a cluster: no count in the insert's script.
        if self.is_cluster() || record.user_id.is_none() {
            return Ok(None);
        }
        self.insert(record, Some(room), event).await
    }

    async fn delete_session_with(
        &self,
        id: &str,
        now: Millis,
        event: Option<Vec<u8>>,
        _: Durability,
    ) -> Result<bool> {
        self.delete_one(id, None, now, event).await
    }

    async fn list_user_sessions(
        &self,
        user_id: &str,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<SessionRecord>> {
        let index = self.keys.user_sessions(user_id);
        let mut out = Vec::new();
        let mut stale = Vec::new();
        let mut start = 0usize;
        while out.len() < limit {
            let stop = start + LIST_PAGE - 1;
            let cmd = redis::cmd("ZRANGE")
                .arg(&index)
                .arg(start)
                .arg(stop)
                .clone();
            let ids: Vec<String> = self.query("session_list", &cmd).await?;
            if ids.is_empty() {
                break;
            }
            let hashes = self.fetch_sessions(&ids).await?;
            for (id, h) in ids.iter().zip(hashes) {
                match decode(id, h)? {
                    Some(r) if r.user_id.as_deref() == Some(user_id) => {
                        if !r.is_expired(now) && out.len() < limit {
                            out.push(r);
                        }
                    }
                    // Gone (expired natively or deleted) or re-used by another owner.
                    _ => stale.push(id.clone()),
                }
            }
            if ids.len() < LIST_PAGE {
                break;
            }
            start += LIST_PAGE;
        }
        if !stale.is_empty() {
            let zrem = redis::cmd("ZREM").arg(&index).arg(&stale).clone();
            self.query::<i64>("session_unindex", &zrem).await?;
        }
        Ok(out)
    }

    async fn delete_user_sessions_with(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: Millis,
        events: Option<EventFor>,
        _: Durability,
    ) -> Result<Vec<String>> {
        let index = self.keys.user_sessions(user_id);
        let cmd = redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1).clone();
        let ids: Vec<String> = self.query("session_list", &cmd).await?;
        let doomed: Vec<&String> = ids
            .iter()
            .filter(|id| Some(id.as_str()) != except)
            .collect();
        let mut deleted = Vec::new();
        for id in &doomed {
            // The record as it is before the delete, for its event.
            let before = match &events {
                Some(_) => self.get_session(id, now).await?,
                None => None,
            };
            let event = before.and_then(|r| events.as_ref().and_then(|f| f(&r)));
            if self.delete_one(id, Some(user_id), now, event).await? {
                deleted.push(id.to_string());
            }
        }
        // Members whose hash was already gone (or owned by another user) go too.
        if !doomed.is_empty() {
            let zrem = redis::cmd("ZREM").arg(&index).arg(&doomed).clone();
            self.query::<i64>("session_unindex", &zrem).await?;
        }
        deleted.sort();
        Ok(deleted)
    }

    async fn sweep_sessions_with(
        &self,
        now: Millis,
        batch: usize,
        events: Option<EventFor>,
    ) -> Result<usize> {
        let batch = batch.clamp(1, crate::MAX_SWEEP_BATCH);
        // Expired sessions end here, with their events (see `session_expiry`).
        let ended = self.sweep_expired(now, batch, events.as_ref()).await?;
        // What is left are per-user index members pointing at hashes that are gone. Walk the
        // per-user indexes with SCAN, resuming where the last sweep stopped. SCAN walks one
        // server's keys, so on a cluster the sweep walks the masters in turn.
        let (rank, cursor) = *lock(&self.session_sweep_cursor);
        let con = self.con()?;
        let masters = self.timed("session_sweep_nodes", con.masters()).await?;
        let rank = rank % masters.len().max(1);
        let Some(node) = masters.get(rank) else {
            return Ok(ended);
        };
        let scan = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(self.keys.user_sessions_pattern())
            .arg("COUNT")
            .arg(batch)
            .arg("TYPE")
            .arg("zset")
            .clone();
        let (next, indexes): (u64, Vec<String>) = self
            .timed("session_sweep_scan", con.query_on(node, &scan))
            .await?;
        *lock(&self.session_sweep_cursor) = if next == 0 {
            (rank + 1, 0)
        } else {
            (rank, next)
        };
        let mut budget = batch;
        let mut removed = 0;
        for index in indexes {
            if budget == 0 {
                break;
            }
            let cmd = redis::cmd("ZRANGE")
                .arg(&index)
                .arg(0)
                .arg(budget - 1)
                .clone();
            let ids: Vec<String> = self.query("session_sweep_range", &cmd).await?;
            budget = budget.saturating_sub(ids.len());
            if ids.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("EXISTS").arg(self.keys.session(id));
            }
            let exists: Vec<i64> = self.query_pipe("session_sweep_check", &pipe).await?;
            let gone: Vec<&String> = ids
                .iter()
                .zip(exists)
                .filter(|(_, e)| *e == 0)
                .map(|(id, _)| id)
                .collect();
            if !gone.is_empty() {
                let zrem = redis::cmd("ZREM").arg(&index).arg(&gone).clone();
                let n: usize = self.query("session_unindex", &zrem).await?;
                removed += n;
            }
        }
        Ok(ended + removed)
    }
}
