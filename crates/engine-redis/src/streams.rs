//! [`StreamStore`] on Redis: one hash tag per stream, chunks in a Redis Stream keyed by
//! offset, one Lua script per change.
//!
//! Why a Redis Stream for chunks: an entry id is `<offset>-1`, so "the chunk containing
//! `from`, then the following ones" is one `XREVRANGE` + `XRANGE` by id inside the read
//! script, stored compactly (listpacks) and trimmed by prefix (`XTRIM MINID`) when the cold
//! tier seals a segment. A sorted set would need a second key for the bytes.
//!
//! Commits are pipelined (see `stream_commits.rs`) and carry the commit's producer rows in the
//! same script. Forks are created and deleted by one script that also rewrites the source's
//! metadata (see `stream_scripts.rs` for why); on Redis Cluster by the protocol of
//! `stream_forks.rs`, whose in-flight operations `stream_meta` resolves.
//!
//! Indexes that span streams (expiry partitions, the name index) are other hash tags, so they
//! are written by separate commands after the stream's own script. Readers never trust them
//! alone: listing checks that each named stream exists, and the expiry scan checks each
//! candidate's stored deadline (repairing the index when it lags). A node that dies between a
//! script and its index update leaves at worst a stream the sweeper does not see until its
//! next commit (lazy expiry on access still applies).

use async_trait::async_trait;
use sessiond_store::{
    Appended, CheckedCommit, CheckedWrite, Commit, CommitTicket, Durability, ForkSource, Millis,
    ProducerBefore, ProducerRecord, ProducerUpdate, Result, SealLease, SegmentRef, StoreError,
    StreamChunk, StreamMeta, StreamStore, Trimmed,
};

use crate::keys::{lex_prefix_range, Keys, STREAM_EXPIRY_PARTITIONS};
use crate::stream_scripts::{decode_producer, producer_row};
use crate::{parse_num, redis_count, RedisEngine};
use std::collections::BTreeMap;
use std::ops::Bound;

/// `expires_at` as a script argument ('' = never).
pub(crate) fn expiry_arg(at: Option<Millis>) -> String {
    at.map(|t| t.to_string()).unwrap_or_default()
}

/// Offset/data pairs (empty chunks carry no bytes and are not stored).
pub(crate) fn push_chunks(cmd: &mut redis::Cmd, chunks: &[StreamChunk]) {
    for c in chunks.iter().filter(|c| !c.data.is_empty()) {
        cmd.arg(c.offset).arg(&c.data);
    }
}

/// [`push_chunks`] for a script's arguments.
pub(crate) fn chunk_args(inv: &mut redis::ScriptInvocation<'_>, chunks: &[StreamChunk]) {
    for c in chunks.iter().filter(|c| !c.data.is_empty()) {
        inv.arg(c.offset).arg(&c.data);
    }
}

/// The index updates of a stream just created: its name, and its expiry when it has one.
fn created_index(keys: &Keys, meta: &StreamMeta) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.zadd(keys.stream_names(), &meta.path, 0).ignore();
    if meta.expires_at.is_some() {
        index_expiry(&mut pipe, keys, &meta.path, meta.expires_at);
        pipe.ignore();
    }
    pipe
}

/// Adds the expiry-index update of `path` to `pipe`.
pub(crate) fn index_expiry(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    path: &str,
    at: Option<Millis>,
) {
    match at {
        Some(at) => pipe.zadd(keys.stream_expiry(path), path, at),
        None => pipe.zrem(keys.stream_expiry(path), path),
    };
}

/// The source arguments of the fork scripts: check flag (state, max start), expected state,
/// new expires_at, new state (no tail: see `stream_scripts::FORK_CREATE`).
pub(crate) fn source_args(inv: &mut redis::ScriptInvocation<'_>, source: &ForkSource) {
    // The check flag: '1' compares the state; ' <max start>' after it compares the start.
    let flag = if source.expected_state.is_some() {
        "1"
    } else {
        "0"
    };
    let check = match source.max_start {
        Some(max) => format!("{flag} {max}"),
        None => flag.to_owned(),
    };
    inv.arg(check)
        .arg(source.expected_state.as_deref().unwrap_or_default());
    inv.arg(expiry_arg(source.expires_at)).arg(&source.state);
}

/// Decodes a segment list entry `<start> <end> <key>`.
fn decode_segment(raw: &[u8]) -> Result<SegmentRef> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| StoreError::Corrupt("stream segment is not UTF-8".into()))?;
    let mut parts = text.splitn(3, ' ');
    let (Some(start), Some(end), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(StoreError::Corrupt("stream segment entry malformed".into()));
    };
    Ok(SegmentRef {
        start: parse_num("segment start", start.as_bytes())?,
        end: parse_num("segment end", end.as_bytes())?,
        object_key: key.to_owned(),
    })
}

/// `tail`, `exp`, `state`, `pend`, `start` of a stream's metadata hash.
type MetaFields = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

#[async_trait]
impl StreamStore for RedisEngine {
    async fn stream_meta(&self, path: &str) -> Result<Option<StreamMeta>> {
        let [m, ..] = self.keys.stream(path);
        let cmd = redis::cmd("HMGET")
            .arg(m)
            .arg("tail")
            .arg("exp")
            .arg("state")
            .arg("pend")
            .arg("start")
            .clone();
        let mut fields: MetaFields = self.query("stream_meta", &cmd).await?;
        if let Some(pend) = fields.3.take() {
            // A fork creation or deletion in flight (Redis Cluster): resolve it first.
            if !self.resolve_pending_fork(path, &pend).await? {
                return Ok(None);
            }
            fields = self.query("stream_meta", &cmd).await?;
        }
        let (tail, exp, state, _, start) = fields;
        let Some(tail) = tail else { return Ok(None) };
        Ok(Some(StreamMeta {
            path: path.to_owned(),
            tail: parse_num("tail", &tail)?,
            expires_at: exp.map(|e| parse_num("exp", &e)).transpose()?,
            state: state.unwrap_or_default(),
            start: start
                .map(|s| parse_num("start", &s))
                .transpose()?
                .unwrap_or(0),
        }))
    }

    async fn create_stream_with_producers(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        producers: ProducerUpdate,
        _: Durability,
    ) -> Result<bool> {
        let [m, c, g, p, pu] = self.keys.stream(&meta.path);
        let mut inv = self.scripts.stream_create.prepare_invoke();
        inv.key(m).key(c).key(g).key(p).key(pu);
        inv.arg(meta.tail)
            .arg(expiry_arg(meta.expires_at))
            .arg(&meta.state)
            .arg(meta.start)
            .arg(producers.upsert.len());
        for r in &producers.upsert {
            inv.arg(&r.id).arg(r.used_at).arg(producer_row(r));
        }
        chunk_args(&mut inv, chunks);
        let created: i64 = self.eval("stream_create", &inv).await?;
        if created == 0 {
            return Ok(false);
        }
        let pipe = created_index(&self.keys, meta);
        self.query_pipe::<()>("stream_index", &pipe).await?;
        Ok(true)
    }

    async fn commit_enqueue(
        &self,
        path: &str,
        expected_tail: u64,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
        _: Durability,
    ) -> Result<CommitTicket> {
        self.enqueue_commit(path, expected_tail, None, chunks, meta, producers)
    }

    async fn commit_checked(&self, w: CheckedWrite<'_>) -> Result<Commit> {
        let state = Some(w.expected_state.to_vec());
        let (chunks, meta) = (w.chunks.to_vec(), w.meta.clone());
        self.enqueue_commit(w.path, w.expected_tail, state, chunks, meta, w.producers)?
            .await
    }

    async fn commit_checked_or_current(&self, w: CheckedWrite<'_>) -> Result<CheckedCommit> {
        let state = Some(w.expected_state.to_vec());
        let (path, tail, producers) = (w.path, w.expected_tail, w.producers);
        let (chunks, meta) = (w.chunks.to_vec(), w.meta.clone());
        let outcome = self
            .enqueue_commit_full(path, tail, state, chunks, meta, producers, None)?
            .await?;
        Ok(match outcome {
            Appended::Written { .. } => CheckedCommit::Written,
            Appended::Conflict(current) => CheckedCommit::Conflict(current),
        })
    }

    /// Moves the append in the commit script itself (see `stream_scripts::COMMIT`): one
    /// round trip whatever the other nodes appended meanwhile.
    async fn append_checked(
        &self,
        w: CheckedWrite<'_>,
        before: &[ProducerBefore],
    ) -> Result<Appended> {
        let state = Some(w.expected_state.to_vec());
        let (path, tail, producers) = (w.path, w.expected_tail, w.producers);
        let (chunks, meta) = (w.chunks.to_vec(), w.meta.clone());
        let append = Some(before.to_vec());
        self.enqueue_commit_full(path, tail, state, chunks, meta, producers, append)?
            .await
    }

    async fn stream_producer(&self, path: &str, id: &str) -> Result<Option<ProducerRecord>> {
        let [_, _, _, p, _] = self.keys.stream(path);
        let cmd = redis::cmd("HGET").arg(p).arg(id).clone();
        let raw: Option<Vec<u8>> = self.query("stream_producer", &cmd).await?;
        raw.map(|raw| decode_producer(id, &raw)).transpose()
    }

    /// The rows are one hash, capped per stream by the capability, so one `HGETALL` and a
    /// sort here is cheaper than keeping a second, ordered index in step with every commit.
    async fn list_stream_producers(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProducerRecord>> {
        let [_, _, _, p, _] = self.keys.stream(path);
        let cmd = redis::cmd("HGETALL").arg(p).clone();
        let rows: BTreeMap<String, Vec<u8>> = self.query("list_stream_producers", &cmd).await?;
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        rows.range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(id, raw)| decode_producer(id, raw))
            .collect()
    }

    async fn create_fork(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        source: &ForkSource,
        _: Durability,
    ) -> Result<bool> {
        if self.is_cluster() {
            return self.cluster_create_fork(meta, chunks, source).await;
        }
        let [m, c, g, p, pu] = self.keys.stream(&meta.path);
        let [sm, ..] = self.keys.stream(&source.path);
        let mut inv = self.scripts.stream_fork_create.prepare_invoke();
        inv.key(m).key(c).key(g).key(p).key(pu).key(sm);
        inv.arg(meta.tail)
            .arg(expiry_arg(meta.expires_at))
            .arg(&meta.state);
        source_args(&mut inv, source);
        inv.arg(meta.start);
        chunk_args(&mut inv, chunks);
        let made: i64 = self.eval("stream_fork_create", &inv).await?;
        if made == 0 {
            return Ok(false);
        }
        let mut pipe = created_index(&self.keys, meta);
        index_expiry(&mut pipe, &self.keys, &source.path, source.expires_at);
        pipe.ignore();
        self.query_pipe::<()>("stream_index", &pipe).await?;
        Ok(true)
    }

    async fn delete_fork(&self, path: &str, source: &ForkSource, _: Durability) -> Result<bool> {
        if self.is_cluster() {
            return self.cluster_delete_fork(path, source).await;
        }
        let [m, c, g, p, pu] = self.keys.stream(path);
        let [sm, ..] = self.keys.stream(&source.path);
        let mut inv = self.scripts.stream_fork_delete.prepare_invoke();
        inv.key(m).key(c).key(g).key(p).key(pu).key(sm);
        inv.arg(self.keys.stream_wake_channel())
            .arg(format!("{} - ", self.node))
            .arg(path);
        source_args(&mut inv, source);
        let deleted: i64 = self.eval("stream_fork_delete", &inv).await?;
        if deleted == 0 {
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        pipe.zrem(self.keys.stream_names(), path).ignore();
        pipe.zrem(self.keys.stream_expiry(path), path).ignore();
        index_expiry(&mut pipe, &self.keys, &source.path, source.expires_at);
        pipe.ignore();
        self.query_pipe::<()>("stream_unindex", &pipe).await?;
        Ok(true)
    }

    async fn read_chunks(
        &self,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StreamChunk>> {
        let [_, c, ..] = self.keys.stream(path);
        let mut inv = self.scripts.stream_read.prepare_invoke();
        inv.key(c).arg(from).arg(redis_count(max_bytes));
        let flat: Vec<Vec<u8>> = self.eval("stream_read", &inv).await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(offset), Some(data)) = (it.next(), it.next()) {
            out.push(StreamChunk {
                offset: parse_num("chunk offset", &offset)?,
                data,
            });
        }
        Ok(out)
    }

    async fn delete_stream(&self, path: &str, _: Durability) -> Result<bool> {
        let [m, c, g, p, pu] = self.keys.stream(path);
        let mut inv = self.scripts.stream_delete.prepare_invoke();
        inv.key(m).key(c).key(g).key(p).key(pu);
        inv.key(self.keys.stream_fork_links(path));
        inv.arg(self.keys.stream_wake_channel())
            .arg(format!("{} - ", self.node))
            .arg(path);
        let deleted: i64 = self.eval("stream_delete", &inv).await?;
        let mut pipe = redis::pipe();
        pipe.zrem(self.keys.stream_names(), path).ignore();
        pipe.zrem(self.keys.stream_expiry(path), path).ignore();
        self.query_pipe::<()>("stream_unindex", &pipe).await?;
        Ok(deleted == 1)
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let (mut min, max) = lex_prefix_range(prefix.as_bytes());
        if let Some(after) = after.filter(|a| *a >= prefix) {
            min = [b"(".as_slice(), after.as_bytes()].concat();
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let want = (limit - out.len()).min(512);
            let cmd = redis::cmd("ZRANGEBYLEX")
                .arg(self.keys.stream_names())
                .arg(&min)
                .arg(&max)
                .arg("LIMIT")
                .arg(0)
                .arg(redis_count(want))
                .clone();
            let names: Vec<String> = self.query("stream_list", &cmd).await?;
            let Some(last) = names.last() else { break };
            min = [b"(".as_slice(), last.as_bytes()].concat();
            let mut pipe = redis::pipe();
            for n in &names {
                pipe.exists(&self.keys.stream(n)[0]);
            }
            let exists: Vec<bool> = self.query_pipe("stream_list_check", &pipe).await?;
            let mut stale = Vec::new();
            for (n, e) in names.iter().zip(&exists) {
                if *e {
                    out.push(n.clone());
                } else {
                    stale.push(n.clone());
                }
            }
            if !stale.is_empty() {
                let cmd = redis::cmd("ZREM")
                    .arg(self.keys.stream_names())
                    .arg(&stale)
                    .clone();
                self.query::<()>("stream_unindex", &cmd).await?;
            }
            if names.len() < want {
                break;
            }
        }
        Ok(out)
    }

    async fn expired_streams(&self, now: Millis, limit: usize) -> Result<Vec<String>> {
        let per = redis_count(limit.min(crate::MAX_SWEEP_BATCH));
        let mut pipe = redis::pipe();
        for n in 0..STREAM_EXPIRY_PARTITIONS {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.keys.stream_expiry_partition(n))
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(per);
        }
        let parts: Vec<Vec<String>> = self.query_pipe("stream_expired", &pipe).await?;
        let candidates: Vec<String> = parts.into_iter().flatten().collect();
        if candidates.is_empty() {
            return Ok(candidates);
        }
        // Verify against each stream's own deadline; repair entries that lag.
        let mut pipe = redis::pipe();
        for p in &candidates {
            pipe.hget(&self.keys.stream(p)[0], "exp");
        }
        let stored: Vec<Option<Vec<u8>>> = self.query_pipe("stream_expired_check", &pipe).await?;
        let mut out = Vec::new();
        let mut repair = redis::pipe();
        let mut repairs = false;
        for (p, exp) in candidates.into_iter().zip(stored) {
            let at: Option<Millis> = exp.map(|e| parse_num("exp", &e)).transpose()?;
            match at {
                Some(at) if at <= now => {
                    if out.len() < limit {
                        out.push(p);
                    }
                }
                other => {
                    index_expiry(&mut repair, &self.keys, &p, other);
                    repair.ignore();
                    repairs = true;
                }
            }
        }
        if repairs {
            self.query_pipe::<()>("stream_reindex", &repair).await?;
        }
        Ok(out)
    }

    async fn segments(&self, path: &str) -> Result<Vec<SegmentRef>> {
        let [_, _, g, ..] = self.keys.stream(path);
        let cmd = redis::cmd("LRANGE").arg(g).arg(0).arg(-1).clone();
        let raw: Vec<Vec<u8>> = self.query("stream_segments", &cmd).await?;
        raw.iter().map(|r| decode_segment(r)).collect()
    }

    async fn seal_segment(&self, path: &str, segment: &SegmentRef, _: Durability) -> Result<bool> {
        let [m, c, g, ..] = self.keys.stream(path);
        let mut inv = self.scripts.stream_seal.prepare_invoke();
        inv.key(m).key(c).key(g);
        inv.arg(segment.end)
            .arg(format!(
                "{} {} {}",
                segment.start, segment.end, segment.object_key
            ))
            .arg(segment.start)
            .arg(self.seal_token.load(std::sync::atomic::Ordering::Acquire));
        let sealed: i64 = self.eval("stream_seal", &inv).await?;
        Ok(sealed == 1)
    }

    async fn trim_stream(
        &self,
        path: &str,
        before: u64,
        max_chunks: usize,
        expected_state: Option<&[u8]>,
        _: Durability,
    ) -> Result<Option<Trimmed>> {
        let [m, c, g, ..] = self.keys.stream(path);
        let mut inv = self.scripts.stream_trim.prepare_invoke();
        inv.key(m).key(c).key(g);
        inv.arg(before)
            .arg(max_chunks)
            .arg(self.keys.stream_wake_channel())
            .arg(format!("{} - ", self.node))
            .arg(path)
            .arg(if expected_state.is_some() { "1" } else { "0" })
            .arg(expected_state.unwrap_or_default());
        let out: Option<Vec<Vec<u8>>> = self.eval("stream_trim", &inv).await?;
        let Some(out) = out else { return Ok(None) };
        let [start, deleted, more, segments @ ..] = out.as_slice() else {
            return Err(StoreError::Corrupt("stream trim reply malformed".into()));
        };
        Ok(Some(Trimmed {
            start: parse_num("start", start)?,
            chunks: parse_num("deleted", deleted)?,
            more: more.as_slice() == b"1",
            segments: segments
                .iter()
                .map(|g| decode_segment(g))
                .collect::<Result<_>>()?,
        }))
    }
    async fn drop_chunks(&self, path: &str, offsets: &[u64], _: Durability) -> Result<bool> {
        if offsets.is_empty() {
            return Ok(self.stream_meta(path).await?.is_some());
        }
        let [m, c, ..] = self.keys.stream(path);
        let mut inv = self.scripts.stream_drop_chunks.prepare_invoke();
        inv.key(m).key(c);
        for o in offsets {
            inv.arg(*o);
        }
        let dropped: i64 = self.eval("stream_drop_chunks", &inv).await?;
        Ok(dropped == 1)
    }
}

#[async_trait]
impl SealLease for RedisEngine {
    async fn acquire_seal_lease(&self, ttl_ms: u64) -> Result<Option<u64>> {
        let [lease, fence] = self.keys.seal_lease();
        let mut inv = self.scripts.seal_lease.prepare_invoke();
        inv.key(lease).key(fence).arg(&self.node).arg(ttl_ms.max(1));
        let token: i64 = self.eval("seal_lease", &inv).await?;
        let Ok(token) = u64::try_from(token) else {
            return Ok(None);
        };
        self.seal_token
            .fetch_max(token, std::sync::atomic::Ordering::AcqRel);
        Ok(Some(token))
    }
}
