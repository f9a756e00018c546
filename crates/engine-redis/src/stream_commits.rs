//! The stream commit queue: commits of this engine instance, sent in order as pipelines.
//!
//! Why a queue: [`StreamStore::commit_enqueue`](sessiond_store::StreamStore) must fix a
//! commit's order when it returns, and many commits should share a round trip. Each commit is
//! put on this engine's queue (that fixes its order) and one writer task sends whatever is
//! queued as one pipeline of `EVAL`s, which Redis applies in queue order. Each script checks
//! the expected tail, so a commit queued behind a failed one fails too, and commits from
//! several nodes to one stream are totally ordered with no gap or duplicate. The exception is
//! an `append_checked`, which the script may move to the stored tail (see `COMMIT`): the
//! streams capability sends those one at a time per stream, under the stream's lock. `EVAL` (not
//! `EVALSHA`) inside the pipeline: a restarted Redis has no script cache, and a `NOSCRIPT` in
//! the middle of a pipeline would fail commits the queue already ordered. On Redis Cluster a
//! batch is one pipeline per slot, sent concurrently (commits of one stream share a slot, so
//! their order holds).

use std::time::Instant;

use sessiond_store::{
    Appended, Commit, CommitTicket, ProducerBefore, ProducerUpdate, Result, StoreError,
    StreamChunk, StreamMeta,
};
use tokio::sync::{mpsc, oneshot};

use crate::keys::Keys;
use crate::stream_scripts::{producer_row, COMMIT};
use crate::streams::{expiry_arg, index_expiry, push_chunks};
use crate::RedisEngine;

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
    producers: ProducerUpdate,
    /// `StreamStore::append_checked`: the producer rows required, and leave to move.
    append: Option<Vec<ProducerBefore>>,
    reply: oneshot::Sender<Result<Appended>>,
}

/// The commit queue's sending side.
pub(crate) type CommitQueue = mpsc::UnboundedSender<Pending>;

/// Starts the writer task that sends queued commits.
pub(crate) fn start_commit_queue(con: crate::conn::Con, keys: Keys, node: String) -> CommitQueue {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run_commits(con, keys, node, rx));
    tx
}

/// The `EVAL` of one commit.
fn commit_cmd(keys: &Keys, node: &str, p: &Pending) -> redis::Cmd {
    let [m, c, _, rows, used] = keys.stream(&p.path);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(COMMIT)
        .arg(4)
        .arg(m)
        .arg(c)
        .arg(rows)
        .arg(used)
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
    cmd.arg(p.producers.max_producers)
        .arg(p.producers.upsert.len());
    let before = p.append.as_deref().unwrap_or_default();
    cmd.arg(if p.append.is_some() { "1" } else { "0" })
        .arg(before.len());
    for b in before {
        // '=' + state for a row, '' for none: the two can never be equal.
        let want = b.state.as_ref().map(|s| [b"=".as_slice(), s].concat());
        cmd.arg(&b.id).arg(want.unwrap_or_default());
    }
    for r in &p.producers.upsert {
        cmd.arg(&r.id).arg(r.used_at).arg(producer_row(r));
    }
    push_chunks(&mut cmd, &p.chunks);
    cmd
}

async fn run_commits(
    con: crate::conn::Con,
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
        metrics::histogram!("sessiond_engine_commit_batch_size", "engine" => "redis")
            .record(batch.len() as f64);
        // On a cluster each slot's commits are their own pipeline (sent concurrently), so a
        // master that is down fails only the commits of its slots, and the outcome of every
        // other commit is known.
        let groups = if con.is_cluster() {
            by_slot(&keys, batch)
        } else {
            vec![batch]
        };
        let sends = groups
            .into_iter()
            .map(|group| send_group(con.clone(), &keys, &node, group));
        futures_util::future::join_all(sends).await;
    }
}

/// Splits a batch by the slot of each commit's stream, keeping queue order within a slot.
fn by_slot(keys: &Keys, batch: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut groups: Vec<(redis::cluster_routing::Slot, Vec<Pending>)> = Vec::new();
    for p in batch {
        let slot = redis::cluster_routing::Slot::for_key(&keys.stream(&p.path)[0]);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(p),
            None => groups.push((slot, vec![p])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Sends one pipeline of commits and reports each outcome, then updates the expiry index.
async fn send_group(mut con: crate::conn::Con, keys: &Keys, node: &str, batch: Vec<Pending>) {
    let mut pipe = redis::pipe();
    for p in &batch {
        pipe.add_command(commit_cmd(keys, node, p));
    }
    let start = Instant::now();
    let out: redis::RedisResult<Vec<redis::Value>> = pipe.query_async(&mut con).await;
    crate::round_trip("stream_commit", start);
    let outcomes = match out {
        Ok(codes) if codes.len() == batch.len() => codes,
        Ok(_) => {
            fail_all(batch, || {
                StoreError::Corrupt("redis: short pipeline reply".into())
            });
            return;
        }
        Err(e) => {
            let msg = format!("redis: {e}");
            fail_all(batch, || StoreError::Unavailable(msg.clone()));
            return;
        }
    };
    let mut index = redis::pipe();
    let mut reindex = false;
    for (p, reply) in batch.into_iter().zip(outcomes) {
        let outcome = commit_outcome(&p, reply);
        if let Ok((_, true)) = outcome {
            index_expiry(&mut index, keys, &p.path, p.meta.expires_at);
            reindex = true;
        }
        let _ = p.reply.send(outcome.map(|(appended, _)| appended));
    }
    if reindex {
        // Not part of the commit's outcome: a lagging index is repaired by the next scan.
        let start = Instant::now();
        let _: redis::RedisResult<()> = index.query_async(&mut con).await;
        crate::round_trip("stream_index", start);
    }
}

/// A commit script's reply: where its chunks landed (or what won), and whether `exp` changed.
fn commit_outcome(p: &Pending, reply: redis::Value) -> Result<(Appended, bool)> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("stream {}: commit reply {what}", p.path));
    match reply {
        redis::Value::Int(code) => Ok((Appended::Written { start: p.expected }, code == 2)),
        redis::Value::Array(items) if items.len() == 2 => {
            // Moved to the stored tail: `{code, new tail}`.
            let (code, tail): (i64, Vec<u8>) =
                redis::FromRedisValue::from_redis_value(redis::Value::Array(items))
                    .map_err(|e| corrupt(&e.to_string()))?;
            let tail: u64 = crate::parse_num("tail", &tail)?;
            let len = p.meta.tail.saturating_sub(p.expected);
            let start = tail
                .checked_sub(len)
                .ok_or_else(|| corrupt("moved below 0"))?;
            Ok((Appended::Written { start }, code == 2))
        }
        lost => Ok((Appended::Conflict(conflict_meta(&p.path, lost)?), false)),
    }
}

/// The metadata a lost commit's script returned: `None` when there is no stream, or a fork
/// operation is pending on it (Redis Cluster: `stream_meta` resolves it).
fn conflict_meta(path: &str, reply: redis::Value) -> Result<Option<StreamMeta>> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("stream {path}: commit reply {what}"));
    type Fields = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );
    let (code, tail, exp, state, pend, start): Fields =
        redis::FromRedisValue::from_redis_value(reply).map_err(|e| corrupt(&e.to_string()))?;
    if code != 0 {
        return Err(corrupt("has an unknown code"));
    }
    let (Some(tail), None) = (tail, pend) else {
        return Ok(None);
    };
    Ok(Some(StreamMeta {
        path: path.to_owned(),
        tail: crate::parse_num("tail", &tail)?,
        expires_at: exp.map(|e| crate::parse_num("exp", &e)).transpose()?,
        state: state.unwrap_or_default(),
        start: start
            .map(|s| crate::parse_num("start", &s))
            .transpose()?
            .unwrap_or(0),
    }))
}

fn fail_all(batch: Vec<Pending>, err: impl Fn() -> StoreError) {
    for p in batch {
        let _ = p.reply.send(Err(err()));
    }
}

impl RedisEngine {
    /// Puts a commit on the writer task's queue (which fixes its order).
    pub(crate) fn enqueue_commit(
        &self,
        path: &str,
        expected_tail: u64,
        expected_state: Option<Vec<u8>>,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
    ) -> Result<CommitTicket> {
        let outcome = self.enqueue_commit_full(
            path,
            expected_tail,
            expected_state,
            chunks,
            meta,
            producers,
            None,
        )?;
        Ok(Box::pin(async move {
            Ok(match outcome.await? {
                Appended::Written { .. } => Commit::Written,
                Appended::Conflict(_) => Commit::Conflict,
            })
        }))
    }

    /// [`enqueue_commit`](Self::enqueue_commit), resolving with where the chunks landed, or
    /// the metadata that won when the commit lost. `append`: see [`Pending::append`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn enqueue_commit_full(
        &self,
        path: &str,
        expected_tail: u64,
        expected_state: Option<Vec<u8>>,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
        append: Option<Vec<ProducerBefore>>,
    ) -> Result<impl std::future::Future<Output = Result<Appended>> + Send + 'static> {
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
            producers,
            append,
            reply,
        };
        self.commits
            .send(pending)
            .map_err(|_| StoreError::Unavailable("redis commit queue stopped".into()))?;
        Ok(async move {
            outcome
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("redis commit lost".into())))
        })
    }
}
