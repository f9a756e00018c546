//! Forks on Redis Cluster: creating or deleting a fork and rewriting its source's metadata,
//! as if in one step, with scripts that each touch one slot.
//!
//! Why a protocol: `StreamStore::create_fork` / `delete_fork` change two streams together
//! (the fork, and the source's fork count in its opaque state), and fork paths are
//! user-chosen, so the two are in different slots; Redis Cluster refuses a script over two
//! slots (`CROSSSLOT`). On a standalone Redis the engine keeps the single script.
//!
//! The protocol (each step one script on one hash tag; `n` is a random nonce):
//! 1. **Fork, prepare.** Creation writes the fork with a `pend` field
//!    `<n> <deadline> c <source>` (refused if the path exists); deletion adds
//!    `<n> <deadline> d <source>` to the existing fork (refused if it is absent or already has
//!    one). A fork pending creation is invisible to readers; one pending deletion still exists.
//! 2. **Source, link: the commit point.** If the source's `fk` hash has no entry for `n` and
//!    it exists with the expected state (its tail is not compared), its state is replaced
//!    and `fk[n] = live <fork>` is recorded, atomically. Otherwise nothing is written and the
//!    operation is refused.
//! 3. **Fork, settle.** With the outcome of step 2, if `pend` still carries `n`: a committed
//!    creation (or aborted deletion) drops `pend`; a committed deletion (or aborted creation)
//!    deletes the fork's keys.
//! 4. **Source, forget.** `fk[n]` of a committed link is removed.
//!
//! Repair, since a node may die between any two steps: a reader that finds a `pend` asks the
//! source. `fk[n] = live` means committed, `dead` aborted; no entry means still in flight,
//! until the deadline (the creating node's clock + [`FORK_TIMEOUT_MS`]); after it, the
//! reader aborts the operation by a source script that records `fk[n] = dead` unless `live`
//! is there (so a late step 2 of a paused creator is refused: whichever of step 2 and the
//! abort runs first wins, both on the source's slot). It then runs steps 3 and 4 itself. All
//! steps are idempotent, so two repairers (or a repairer and the creator) agree. Clocks only
//! decide when a repair may start, never the outcome. `dead` entries stay until the source is
//! deleted (they only exist after a node died mid-fork).

use sessiond_store::{now_ms, Result, StoreError, StreamChunk, StreamMeta};

use crate::stream_scripts::lua_helpers;
use crate::streams::{chunk_args, expiry_arg, index_expiry, source_args};
use crate::{parse_num, RedisEngine};

/// How long a fork creation or deletion may take between its first and last step before
/// another node may abort it (a node died half-way). Generous: a slow but live node must not
/// be aborted, and a pending fork costs only its invisibility meanwhile.
pub const FORK_TIMEOUT_MS: i64 = 10_000;

/// Step 1 of a creation. KEYS: fork meta, chunks, segments, producers, producer use, fork
/// links. ARGV: pend, tail, expires_at or '', state, retained start, then offset/data pairs.
/// Returns 1 prepared, 0 the path exists.
pub const PREPARE_CREATE: &str = concat!(
    lua_helpers!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
set_meta(KEYS[1], ARGV[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[1], 'pend', ARGV[1], 'start', ARGV[5])
add_chunks(KEYS[2], 6)
return 1
"
);

/// Step 1 of a deletion. KEYS: fork meta. ARGV: pend.
/// Returns 1 prepared, 0 absent or another operation is pending.
pub const PREPARE_DELETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'pend') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'pend', ARGV[1])
return 1
";

/// Step 2. KEYS: source meta, source fork links. ARGV: nonce, fork path, then the source
/// arguments (check flag, expected state, new expires_at, new state; the source's tail is
/// neither compared nor written, as in `stream_scripts::FORK_CREATE`, which also describes the
/// check flag). Returns 0 refused, 1 linked, 2 linked and the source's `exp` changed.
pub const LINK: &str = concat!(
    lua_helpers!(),
    r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
if not source_is(KEYS[1], ARGV[3], ARGV[4]) then return 0 end
local changed = set_state(KEYS[1], ARGV[5], ARGV[6])
redis.call('HSET', KEYS[2], ARGV[1], 'live ' .. ARGV[2])
return changed
"
);

/// The repair's decision. KEYS: source meta, source fork links. ARGV: nonce.
/// Returns 1 committed (linked), 0 aborted (now or before).
pub const ABORT: &str = r"
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v then
  if string.sub(v, 1, 5) == 'live ' then return 1 end
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[2], ARGV[1], 'dead') end
return 0
";

/// Step 3. KEYS: fork meta, chunks, segments, producers, producer use, fork links.
/// ARGV: nonce, 'keep' or 'drop', channel, notification prefix, fork path.
/// Returns 0 not pending with this nonce (settled already), 1 kept, 2 dropped.
pub const SETTLE: &str = concat!(
    lua_helpers!(),
    r"
local pend = redis.call('HGET', KEYS[1], 'pend')
if not pend or string.sub(pend, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then return 0 end
if ARGV[2] == 'keep' then
  redis.call('HDEL', KEYS[1], 'pend')
  return 1
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
notify(ARGV[3], ARGV[4], ARGV[5])
return 2
"
);

/// A fork operation in flight, as recorded in the fork's `pend` field.
struct Pending {
    nonce: String,
    deadline: i64,
    create: bool,
    source: String,
}

fn parse_pending(raw: &[u8]) -> Result<Pending> {
    let text =
        std::str::from_utf8(raw).map_err(|_| StoreError::Corrupt("fork pend not UTF-8".into()))?;
    let mut parts = text.splitn(4, ' ');
    let (Some(nonce), Some(deadline), Some(kind), Some(source)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(StoreError::Corrupt("fork pend malformed".into()));
    };
    Ok(Pending {
        nonce: nonce.to_owned(),
        deadline: parse_num("fork pend deadline", deadline.as_bytes())?,
        create: kind == "c",
        source: source.to_owned(),
    })
}

/// A random nonce (128 bits from the OS through std's hasher seeds, plus time and a counter).
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(32);
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_i64(now_ms());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl RedisEngine {
    /// `create_fork` on Redis Cluster (see the module docs).
    pub(crate) async fn cluster_create_fork(
        &self,
        meta: &StreamMeta,
        chunks: &[StreamChunk],
        source: &sessiond_store::ForkSource,
    ) -> Result<bool> {
        let n = nonce();
        let pend = format!("{n} {} c {}", now_ms() + FORK_TIMEOUT_MS, source.path);
        let [m, c, g, p, pu] = self.keys.stream(&meta.path);
        let fk = self.keys.stream_fork_links(&meta.path);
        let mut inv = self.scripts.fork_prepare_create.prepare_invoke();
        inv.key(m).key(c).key(g).key(p).key(pu).key(fk);
        inv.arg(&pend)
            .arg(meta.tail)
            .arg(expiry_arg(meta.expires_at))
            .arg(&meta.state)
            .arg(meta.start);
        chunk_args(&mut inv, chunks);
        let prepared: i64 = self.eval("stream_fork_prepare", &inv).await?;
        if prepared == 0 {
            return Ok(false);
        }
        let linked = self.fork_link(&n, &meta.path, source).await?;
        self.fork_settle(&meta.path, &n, linked).await?;
        if linked {
            self.fork_forget(&source.path, &n).await?;
            self.fork_index(&meta.path, meta.expires_at, &source.path, source.expires_at)
                .await?;
        }
        Ok(linked)
    }

    /// `delete_fork` on Redis Cluster (see the module docs).
    pub(crate) async fn cluster_delete_fork(
        &self,
        path: &str,
        source: &sessiond_store::ForkSource,
    ) -> Result<bool> {
        let n = nonce();
        let pend = format!("{n} {} d {}", now_ms() + FORK_TIMEOUT_MS, source.path);
        let [m, ..] = self.keys.stream(path);
        let mut inv = self.scripts.fork_prepare_delete.prepare_invoke();
        inv.key(m).arg(&pend);
        let prepared: i64 = self.eval("stream_fork_prepare", &inv).await?;
        if prepared == 0 {
            return Ok(false);
        }
        let linked = self.fork_link(&n, path, source).await?;
        self.fork_settle(path, &n, !linked).await?;
        if linked {
            self.fork_forget(&source.path, &n).await?;
            self.fork_unindex(path, &source.path, source.expires_at)
                .await?;
        }
        Ok(linked)
    }

    /// Step 2: true if the source linked (the operation is committed).
    async fn fork_link(
        &self,
        n: &str,
        fork: &str,
        source: &sessiond_store::ForkSource,
    ) -> Result<bool> {
        let [sm, ..] = self.keys.stream(&source.path);
        let mut inv = self.scripts.fork_link.prepare_invoke();
        inv.key(sm).key(self.keys.stream_fork_links(&source.path));
        inv.arg(n).arg(fork);
        source_args(&mut inv, source);
        let linked: i64 = self.eval("stream_fork_link", &inv).await?;
        Ok(linked > 0)
    }

    /// Step 3: keeps the fork (drops its `pend`) or deletes it, if still pending with `n`.
    async fn fork_settle(&self, path: &str, n: &str, keep: bool) -> Result<()> {
        let [m, c, g, p, pu] = self.keys.stream(path);
        let mut inv = self.scripts.fork_settle.prepare_invoke();
        inv.key(m).key(c).key(g).key(p).key(pu);
        inv.key(self.keys.stream_fork_links(path));
        inv.arg(n)
            .arg(if keep { "keep" } else { "drop" })
            .arg(self.keys.stream_wake_channel())
            .arg(format!("{} - ", self.node))
            .arg(path);
        let _: i64 = self.eval("stream_fork_settle", &inv).await?;
        Ok(())
    }

    /// Step 4: the source forgets a committed link.
    async fn fork_forget(&self, source: &str, n: &str) -> Result<()> {
        let cmd = redis::cmd("HDEL")
            .arg(self.keys.stream_fork_links(source))
            .arg(n)
            .clone();
        self.query::<i64>("stream_fork_forget", &cmd).await?;
        Ok(())
    }

    /// The index updates of a created fork (and its source's expiry).
    async fn fork_index(
        &self,
        fork: &str,
        fork_exp: Option<i64>,
        source: &str,
        source_exp: Option<i64>,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.zadd(self.keys.stream_names(), fork, 0).ignore();
        if fork_exp.is_some() {
            index_expiry(&mut pipe, &self.keys, fork, fork_exp);
            pipe.ignore();
        }
        index_expiry(&mut pipe, &self.keys, source, source_exp);
        pipe.ignore();
        self.query_pipe::<()>("stream_index", &pipe).await
    }

    /// The index updates of a deleted fork (and its source's expiry).
    async fn fork_unindex(&self, fork: &str, source: &str, source_exp: Option<i64>) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.zrem(self.keys.stream_names(), fork).ignore();
        pipe.zrem(self.keys.stream_expiry(fork), fork).ignore();
        index_expiry(&mut pipe, &self.keys, source, source_exp);
        pipe.ignore();
        self.query_pipe::<()>("stream_unindex", &pipe).await
    }

    /// The stored expiry of `path` (for a repair's index update).
    async fn stored_expiry(&self, path: &str) -> Result<Option<i64>> {
        let [m, ..] = self.keys.stream(path);
        let cmd = redis::cmd("HGET").arg(m).arg("exp").clone();
        let raw: Option<Vec<u8>> = self.query("stream_meta", &cmd).await?;
        raw.map(|r| parse_num("exp", &r)).transpose()
    }

    /// Resolves the fork operation recorded in `pend` of `path` (found by a reader): finishes
    /// it when its source committed, aborts it when its deadline passed, else leaves it in
    /// flight. Returns whether the stream exists for readers now.
    pub(crate) async fn resolve_pending_fork(&self, path: &str, pend: &[u8]) -> Result<bool> {
        let pending = parse_pending(pend)?;
        let links = self.keys.stream_fork_links(&pending.source);
        let committed = if now_ms() > pending.deadline {
            let [sm, ..] = self.keys.stream(&pending.source);
            let mut inv = self.scripts.fork_abort.prepare_invoke();
            inv.key(sm).key(&links).arg(&pending.nonce);
            let linked: i64 = self.eval("stream_fork_abort", &inv).await?;
            linked == 1
        } else {
            let cmd = redis::cmd("HGET").arg(&links).arg(&pending.nonce).clone();
            let entry: Option<Vec<u8>> = self.query("stream_fork_check", &cmd).await?;
            match entry {
                Some(e) => e.starts_with(b"live "),
                // In flight: a creation is not visible yet, a deletion not done yet.
                None => return Ok(!pending.create),
            }
        };
        // A committed creation or an aborted deletion keeps the fork.
        let keep = committed == pending.create;
        self.fork_settle(path, &pending.nonce, keep).await?;
        if committed {
            self.fork_forget(&pending.source, &pending.nonce).await?;
            let source_exp = self.stored_expiry(&pending.source).await?;
            if pending.create {
                let exp = self.stored_expiry(path).await?;
                self.fork_index(path, exp, &pending.source, source_exp)
                    .await?;
            } else {
                self.fork_unindex(path, &pending.source, source_exp).await?;
            }
        }
        Ok(keep)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pending_records_parse_and_nonces_differ() {
        let p = super::parse_pending(b"abc 1700 c a b/c").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.nonce.as_str(), p.deadline, p.create, p.source.as_str()),
            ("abc", 1700, true, "a b/c")
        );
        assert!(super::parse_pending(b"abc 1700").is_err());
        assert_ne!(super::nonce(), super::nonce());
    }
}
