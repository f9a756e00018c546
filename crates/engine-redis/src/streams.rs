//! [`StreamStore`] and [`StreamWakes`] on Redis: one hash tag per stream, chunks in a Redis
//! Stream keyed by offset, one Lua script per change, tail notifications over pub/sub.
//!
//! Why a Redis Stream for chunks: an entry id is `<offset>-1`, so "the chunk containing
//! `from`, then the following ones" is one `XREVRANGE` + `XRANGE` by id inside the read
//! script, stored compactly (listpacks) and trimmed by prefix (`XTRIM MINID`) when the cold
//! tier seals a segment. A sorted set would need a second key for the bytes.
//!
//! Commits are pipelined: [`StreamStore::commit_enqueue`] puts the commit on this engine's
//! queue (that fixes its order) and one writer task sends whatever is queued as one pipeline
//! of `EVAL`s, so many commits share a round trip and Redis applies them in queue order. Each
//! script checks the expected tail, so a commit queued behind a failed one fails too, and
//! commits from several nodes to one stream are totally ordered with no gap or duplicate.
//! `EVAL` (not `EVALSHA`) inside the pipeline: a restarted Redis has no script cache, and a
//! `NOSCRIPT` in the middle of a pipeline would fail commits the queue already ordered.
//!
//! Indexes that span streams (expiry partitions, the name index) are other hash tags, so they
//! are written by separate commands after the stream's own script. Readers never trust them
//! alone: listing checks that each named stream exists, and the expiry scan checks each
//! candidate's stored deadline (repairing the index when it lags). A node that dies between a
//! script and its index update leaves at worst a stream the sweeper does not see until its
//! next commit (lazy expiry on access still applies).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use sessiond_store::{
    Commit, CommitTicket, Durability, Millis, Result, SegmentRef, StoreError, StreamChunk,
    StreamMeta, StreamStore, StreamWake, StreamWakes, WakeSink,
};
use tokio::sync::{mpsc, oneshot};

use crate::keys::{lex_prefix_range, Keys, STREAM_EXPIRY_PARTITIONS};
use crate::stream_scripts::COMMIT;
use crate::{parse_num, redis_count, RedisEngine};

/// Most commits one pipeline carries, and the payload bytes after which it is sent anyway.
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 8 << 20;

/// A queued commit.
pub(crate) struct Pending {
    path: String,
    expected: u64,
    /// The state the stored one must equal (`commit_checked`).
    expected_state: Option<Vec<u8>>,
    chunks: Vec<StreamChunk>,
    meta: StreamMeta,
    reply: oneshot::Sender<Result<Commit>>,
}

/// The commit queue's sending side.
pub(crate) type CommitQueue = mpsc::UnboundedSender<Pending>;

/// Sinks of tail notifications, shared with the subscriber task.
pub(crate) type Sinks = Arc<Mutex<Vec<WakeSink>>>;

/// A random id naming this engine instance in its notifications (so it skips its own).
pub(crate) fn node_id() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Starts the writer task that sends queued commits.
pub(crate) fn start_commit_queue(con: ConnectionManager, keys: Keys, node: String) -> CommitQueue {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run_commits(con, keys, node, rx));
    tx
}

/// The `EVAL` of one commit.
fn commit_cmd(keys: &Keys, node: &str, p: &Pending) -> redis::Cmd {
    let [m, c, _] = keys.stream(&p.path);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(COMMIT)
        .arg(2)
        .arg(m)
        .arg(c)
        .arg(p.expected)
        .arg(p.meta.tail)
        .arg(expiry_arg(p.meta.expires_at))
        .arg(&p.meta.state)
        .arg(keys.stream_wake_channel())
        .arg(format!("{node} "))
        .arg(&p.path);
    match &p.expected_state {
        Some(state) => cmd.arg("1").arg(state),
        None => cmd.arg("0").arg(""),
    };
    push_chunks(&mut cmd, &p.chunks);
    cmd
}

/// `expires_at` as a script argument ('' = never).
fn expiry_arg(at: Option<Millis>) -> String {
    at.map(|t| t.to_string()).unwrap_or_default()
}

/// Offset/data pairs (empty chunks carry no bytes and are not stored).
fn push_chunks(cmd: &mut redis::Cmd, chunks: &[StreamChunk]) {
    for c in chunks.iter().filter(|c| !c.data.is_empty()) {
        cmd.arg(c.offset).arg(&c.data);
    }
}

/// Adds the expiry-index update of `path` to `pipe`.
fn index_expiry(pipe: &mut redis::Pipeline, keys: &Keys, path: &str, at: Option<Millis>) {
    match at {
        Some(at) => pipe.zadd(keys.stream_expiry(path), path, at),
        None => pipe.zrem(keys.stream_expiry(path), path),
    };
}

async fn run_commits(
    mut con: ConnectionManager,
    keys: Keys,
    node: String,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut bytes = 0usize;
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            bytes += next.chunks.iter().map(|c| c.data.len()).sum::<usize>();
            batch.push(next);
        }
        let mut pipe = redis::pipe();
        for p in &batch {
            pipe.add_command(commit_cmd(&keys, &node, p));
        }
        let start = Instant::now();
        let out: redis::RedisResult<Vec<i64>> = pipe.query_async(&mut con).await;
        metrics::histogram!("sessiond_engine_command_seconds", "engine" => "redis", "op" => "stream_commit")
            .record(start.elapsed().as_secs_f64());
        metrics::histogram!("sessiond_engine_commit_batch_size", "engine" => "redis")
            .record(batch.len() as f64);
        let outcomes = match out {
            Ok(codes) if codes.len() == batch.len() => codes,
            Ok(_) => {
                fail_all(batch, || {
                    StoreError::Corrupt("redis: short pipeline reply".into())
                });
                continue;
            }
            Err(e) => {
                let msg = format!("redis: {e}");
                fail_all(batch, || StoreError::Unavailable(msg.clone()));
                continue;
            }
        };
        let mut index = redis::pipe();
        let mut reindex = false;
        for (p, code) in batch.into_iter().zip(outcomes) {
            if code == 2 {
                index_expiry(&mut index, &keys, &p.path, p.meta.expires_at);
                reindex = true;
            }
            let outcome = if code == 0 {
                Commit::Conflict
            } else {
                Commit::Written
            };
            let _ = p.reply.send(Ok(outcome));
        }
        if reindex {
            // Not part of the commit's outcome: a lagging index is repaired by the next scan.
            let _: redis::RedisResult<()> = index.query_async(&mut con).await;
        }
    }
}

fn fail_all(batch: Vec<Pending>, err: impl Fn() -> StoreError) {
    for p in batch {
        let _ = p.reply.send(Err(err()));
    }
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

#[async_trait]
impl StreamStore for RedisEngine {
    async fn stream_meta(&self, path: &str) -> Result<Option<StreamMeta>> {
        let [m, _, _] = self.keys.stream(path);
        let cmd = redis::cmd("HMGET")
            .arg(m)
            .arg("tail")
            .arg("exp")
            .arg("state")
            .clone();
        let (tail, exp, state): (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>) =
            self.query("stream_meta", &cmd).await?;
        let Some(tail) = tail else { return Ok(None) };
        Ok(Some(StreamMeta {
            path: path.to_owned(),
            tail: parse_num("tail", &tail)?,
            expires_at: exp.map(|e| parse_num("exp", &e)).transpose()?,
            state: state.unwrap_or_default(),
        }))
    }

    async fn create_stream(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        _: Durability,
    ) -> Result<bool> {
        let [m, c, g] = self.keys.stream(&meta.path);
        let mut inv = self.scripts.stream_create.prepare_invoke();
        inv.key(m).key(c).key(g);
        inv.arg(meta.tail)
            .arg(expiry_arg(meta.expires_at))
            .arg(&meta.state);
        for ch in chunks.iter().filter(|c| !c.data.is_empty()) {
            inv.arg(ch.offset).arg(&ch.data);
        }
        let created: i64 = self.eval("stream_create", &inv).await?;
        if created == 0 {
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        pipe.zadd(self.keys.stream_names(), &meta.path, 0).ignore();
        if meta.expires_at.is_some() {
            index_expiry(&mut pipe, &self.keys, &meta.path, meta.expires_at);
            pipe.ignore();
        }
        self.query_pipe::<()>("stream_index", &pipe).await?;
        Ok(true)
    }

    async fn commit_enqueue(
        &self,
        path: &str,
        expected_tail: u64,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        _: Durability,
    ) -> Result<CommitTicket> {
        self.enqueue_commit(path, expected_tail, None, chunks, meta)
    }

    async fn commit_checked(
        &self,
        path: &str,
        expected_tail: u64,
        expected_state: &[u8],
        chunks: &[StreamChunk],
        meta: &StreamMeta,
        _: Durability,
    ) -> Result<Commit> {
        let state = Some(expected_state.to_vec());
        self.enqueue_commit(path, expected_tail, state, chunks.to_vec(), meta.clone())?
            .await
    }

    async fn read_chunks(
        &self,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StreamChunk>> {
        let [_, c, _] = self.keys.stream(path);
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
        let [m, c, g] = self.keys.stream(path);
        let mut inv = self.scripts.stream_delete.prepare_invoke();
        inv.key(m).key(c).key(g);
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
        let [_, _, g] = self.keys.stream(path);
        let cmd = redis::cmd("LRANGE").arg(g).arg(0).arg(-1).clone();
        let raw: Vec<Vec<u8>> = self.query("stream_segments", &cmd).await?;
        raw.iter().map(|r| decode_segment(r)).collect()
    }

    async fn seal_segment(&self, path: &str, segment: &SegmentRef, _: Durability) -> Result<bool> {
        let [m, c, g] = self.keys.stream(path);
        let mut inv = self.scripts.stream_seal.prepare_invoke();
        inv.key(m).key(c).key(g);
        inv.arg(segment.end).arg(format!(
            "{} {} {}",
            segment.start, segment.end, segment.object_key
        ));
        let sealed: i64 = self.eval("stream_seal", &inv).await?;
        Ok(sealed == 1)
    }
}

impl RedisEngine {
    /// Puts a commit on the writer task's queue (which fixes its order).
    fn enqueue_commit(
        &self,
        path: &str,
        expected_tail: u64,
        expected_state: Option<Vec<u8>>,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
    ) -> Result<CommitTicket> {
        self.con()?;
        let mut at = expected_tail;
        for c in &chunks {
            if c.offset != at {
                return Err(StoreError::Corrupt(format!(
                    "stream {path}: commit chunks are not contiguous from the expected tail"
                )));
            }
            at = c.end();
        }
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            path: path.to_owned(),
            expected: expected_tail,
            expected_state,
            chunks,
            meta,
            reply,
        };
        self.commits
            .send(pending)
            .map_err(|_| StoreError::Unavailable("redis commit queue stopped".into()))?;
        Ok(Box::pin(async move {
            outcome
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("redis commit lost".into())))
        }))
    }
}

impl StreamWakes for RedisEngine {
    fn listen(&self, sink: WakeSink) {
        let first = {
            let mut sinks = crate::lock(&self.wake_sinks);
            sinks.push(sink);
            sinks.len() == 1
        };
        if first {
            tokio::spawn(run_wakes(
                self.client.clone(),
                self.keys.stream_wake_channel(),
                self.node.clone(),
                Arc::downgrade(&self.wake_sinks),
            ));
        }
    }
}

/// Calls every sink; false once the engine is gone.
fn deliver(sinks: &Weak<Mutex<Vec<WakeSink>>>, wake: StreamWake<'_>) -> bool {
    let Some(sinks) = sinks.upgrade() else {
        return false;
    };
    let sinks: Vec<WakeSink> = crate::lock(&sinks).clone();
    for sink in sinks {
        sink(wake);
    }
    true
}

/// The subscriber: one pub/sub connection per engine, resubscribed after any failure, with a
/// `Resync` after every (re)subscription since notifications may have been missed meanwhile.
async fn run_wakes(
    client: redis::Client,
    channel: String,
    node: String,
    sinks: Weak<Mutex<Vec<WakeSink>>>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        if sinks.strong_count() == 0 {
            return;
        }
        if let Ok(mut pubsub) = client.get_async_pubsub().await {
            if pubsub.subscribe(&channel).await.is_ok() {
                delay = Duration::from_millis(100);
                metrics::counter!("sessiond_engine_redis_subscriptions_total").increment(1);
                if !deliver(&sinks, StreamWake::Resync) {
                    return;
                }
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Some((from, sent_ms, path)) = parse_wake(msg.get_payload_bytes()) else {
                        continue;
                    };
                    if from == node.as_bytes() {
                        continue;
                    }
                    let lag_ms = (sessiond_store::now_ms() - sent_ms).max(0);
                    metrics::histogram!("sessiond_engine_redis_wake_lag_seconds")
                        .record(lag_ms as f64 / 1000.0);
                    if !deliver(&sinks, StreamWake::Changed(path)) {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Splits `<node> <tail> <ms> <path>` into the node id, the Redis time and the path.
fn parse_wake(raw: &[u8]) -> Option<(&[u8], Millis, &str)> {
    let mut parts = raw.splitn(4, |b| *b == b' ');
    let node = parts.next()?;
    let _tail = parts.next()?;
    let ms = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let path = std::str::from_utf8(parts.next()?).ok()?;
    Some((node, ms, path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn wake_payloads_keep_spaces_in_paths() {
        assert_eq!(
            super::parse_wake(b"n1 42 1700000000123 a b/c"),
            Some((&b"n1"[..], 1_700_000_000_123, "a b/c"))
        );
        assert_eq!(super::parse_wake(b"n1 - 5 p"), Some((&b"n1"[..], 5, "p")));
        assert_eq!(super::parse_wake(b"n1 42"), None);
    }
}
