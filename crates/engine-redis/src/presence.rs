//! Realtime presence on Redis ([`sessiond_store::PresenceStore`]).
//!
//! Each set (a user's or a channel's connections) is three keys under one hash tag: a ZSET of
//! member ids scored by lease end, a HASH of their infos, and a HASH of its transitions. Every
//! change is one script, which first drops the expired members, so the count it decides a
//! transition on is the live count, and Redis runs scripts one at a time, so each transition
//! is seen by exactly one caller. Sets with members to sweep are found through one index ZSET
//! (earliest lease end per set), updated right after the set's script: a separate key, so
//! every script stays in one slot on Redis Cluster.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;
use sessiond_store::presence::{Expired, Joined, Left, PresenceMember, PresenceStore};
use sessiond_store::{Millis, Result};

use crate::{redis_count, RedisEngine};

/// How long a set's transition record outlives its last change (ms): long enough that a
/// debounced announcement still finds it.
const STATE_TTL_MS: Millis = 24 * 3_600_000;

/// Shared by the scripts: drops members whose lease ended by ARGV[now]; returns them with
/// their infos (flat: id, info, …).
const EXPIRE: &str = r"
local function expire(z, h, now)
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  local out = {}
  for _, id in ipairs(dead) do
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', h, id) or ''
    redis.call('HDEL', h, id)
  end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
  return out
end
local function went_offline(z, s, ttl)
  if redis.call('ZCARD', z) == 0 and redis.call('HGET', s, 'on') == '1' then
    local g = redis.call('HINCRBY', s, 'g', 1)
    redis.call('HSET', s, 'on', '0')
    redis.call('PEXPIRE', s, ttl)
    return g
  end
  return 0
end
";

/// KEYS z, h, s. ARGV id, info, now, expire-at, limit, key ttl, state ttl.
/// Returns {admitted, live, online generation or 0}.
const JOIN: &str = r"
expire(KEYS[1], KEYS[2], ARGV[3])
local present = redis.call('ZSCORE', KEYS[1], ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if not present and n >= tonumber(ARGV[5]) then return {0, n, 0} end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local g = 0
if redis.call('HGET', KEYS[3], 'on') ~= '1' then
  g = redis.call('HINCRBY', KEYS[3], 'g', 1)
  redis.call('HSET', KEYS[3], 'on', '1')
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
if not present then n = n + 1 end
return {1, n, g}
";

/// KEYS z, h, s. ARGV id, now, state ttl. Returns {live, offline generation or 0}.
const LEAVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
expire(KEYS[1], KEYS[2], ARGV[2])
local g = went_offline(KEYS[1], KEYS[3], ARGV[3])
return {redis.call('ZCARD', KEYS[1]), g}
";

/// KEYS z, h. ARGV expire-at, key ttl, then id, info pairs. Members no longer in the set
/// stay out; their ids are returned.
const REFRESH: &str = r"
local missing = {}
for i = 3, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  else
    missing[#missing + 1] = ARGV[i]
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return missing
";

/// KEYS z, h. ARGV now. Returns the live members, flat: id, info, ….
const MEMBERS: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
";

/// KEYS z, h, s. ARGV now, state ttl. Returns {offline generation or 0, earliest lease end
/// left or -1, removed id, info, …}.
const SWEEP: &str = r"
local dead = expire(KEYS[1], KEYS[2], ARGV[1])
local g = went_offline(KEYS[1], KEYS[3], ARGV[2])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local out = {tostring(g), first[2] or '-1'}
for _, v in ipairs(dead) do out[#out + 1] = v end
return out
";

/// KEYS index. ARGV set, expire-at, now. A join's lease end becomes the set's sweep time
/// unless an earlier, still future one is there.
const INDEX_JOIN: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not s) or tonumber(s) <= tonumber(ARGV[3]) or tonumber(ARGV[2]) < tonumber(s) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 0
";

/// KEYS index. ARGV set, next sweep time or -1 (empty), now. An empty set leaves the index
/// unless a join moved its time into the future meanwhile.
const INDEX_SWEPT: &str = r"
if ARGV[2] == '-1' then
  local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if s and tonumber(s) <= tonumber(ARGV[3]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 0
";

/// KEYS s. ARGV generation, online (1/0). Returns 1 when this settles the state.
const SETTLE: &str = r"
local st = redis.call('HMGET', KEYS[1], 'g', 'on', 'em')
if st[1] == ARGV[1] and st[2] == ARGV[2] and (st[3] or '0') ~= ARGV[2] then
  redis.call('HSET', KEYS[1], 'em', ARGV[2])
  return 1
end
return 0
";

fn script(body: &str) -> Script {
    Script::new(&format!("{EXPIRE}\n{body}"))
}

static JOIN_S: LazyLock<Script> = LazyLock::new(|| script(JOIN));
static LEAVE_S: LazyLock<Script> = LazyLock::new(|| script(LEAVE));
static REFRESH_S: LazyLock<Script> = LazyLock::new(|| Script::new(REFRESH));
static MEMBERS_S: LazyLock<Script> = LazyLock::new(|| Script::new(MEMBERS));
static SWEEP_S: LazyLock<Script> = LazyLock::new(|| script(SWEEP));
static INDEX_JOIN_S: LazyLock<Script> = LazyLock::new(|| Script::new(INDEX_JOIN));
static INDEX_SWEPT_S: LazyLock<Script> = LazyLock::new(|| Script::new(INDEX_SWEPT));
static SETTLE_S: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE));

/// Most members renewed by one script call.
const REFRESH_CHUNK: usize = 500;

/// Set keys live three leases past their last join or refresh.
fn key_ttl(ttl_ms: Millis) -> Millis {
    ttl_ms.max(1).saturating_mul(3)
}

fn pairs(flat: &[String]) -> Vec<PresenceMember> {
    flat.chunks_exact(2)
        .map(|kv| PresenceMember {
            id: kv[0].clone(),
            info: kv[1].clone(),
        })
        .collect()
}

fn generation(g: i64) -> Option<u64> {
    u64::try_from(g).ok().filter(|g| *g > 0)
}

impl RedisEngine {
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut con = self.con()?;
        self.timed(op, inv.invoke_async(&mut con)).await
    }
}

#[async_trait]
impl PresenceStore for RedisEngine {
    async fn join(
        &self,
        set: &str,
        member: &PresenceMember,
        now: Millis,
        ttl_ms: Millis,
        limit: usize,
    ) -> Result<Joined> {
        let [z, h, s] = self.keys.presence(set);
        let expire_at = now.saturating_add(ttl_ms);
        let mut inv = JOIN_S.key(z);
        inv.key(h)
            .key(s)
            .arg(&member.id)
            .arg(&member.info)
            .arg(now)
            .arg(expire_at)
            .arg(redis_count(limit))
            .arg(key_ttl(ttl_ms))
            .arg(STATE_TTL_MS);
        let (admitted, live, g): (i64, usize, i64) = self.run("rt_presence_join", inv).await?;
        if admitted == 1 {
            let mut inv = INDEX_JOIN_S.key(self.keys.presence_index());
            inv.arg(set).arg(expire_at).arg(now);
            let _: i64 = self.run("rt_presence_index", inv).await?;
        }
        Ok(Joined {
            admitted: admitted == 1,
            live,
            online: generation(g),
        })
    }

    async fn leave(&self, set: &str, id: &str, now: Millis) -> Result<Left> {
        let [z, h, s] = self.keys.presence(set);
        let mut inv = LEAVE_S.key(z);
        inv.key(h).key(s).arg(id).arg(now).arg(STATE_TTL_MS);
        let (live, g): (usize, i64) = self.run("rt_presence_leave", inv).await?;
        Ok(Left {
            live,
            offline: generation(g),
        })
    }

    async fn refresh(
        &self,
        members: &[(String, PresenceMember)],
        now: Millis,
        ttl_ms: Millis,
    ) -> Result<Vec<(String, String)>> {
        let expire_at = now.saturating_add(ttl_ms);
        let mut by_set: std::collections::BTreeMap<&str, Vec<&PresenceMember>> =
            std::collections::BTreeMap::new();
        for (set, member) in members {
            by_set.entry(set).or_default().push(member);
        }
        // One script per set (per REFRESH_CHUNK members, so no script blocks Redis for
        // long), all sent in one pipeline: one round trip per refresh (on a cluster, one per
        // master, in parallel).
        let pipeline = |by_body: bool| {
            let mut pipe = redis::pipe();
            let mut sets: Vec<&str> = Vec::new();
            for (set, list) in &by_set {
                let [z, h, _] = self.keys.presence(set);
                for chunk in list.chunks(REFRESH_CHUNK) {
                    let cmd = if by_body {
                        pipe.cmd("EVAL").arg(REFRESH)
                    } else {
                        pipe.cmd("EVALSHA").arg(REFRESH_S.get_hash())
                    };
                    cmd.arg(2).arg(&z).arg(&h);
                    cmd.arg(expire_at).arg(key_ttl(ttl_ms));
                    for m in chunk {
                        cmd.arg(&m.id).arg(&m.info);
                    }
                    sets.push(*set);
                }
            }
            (pipe, sets)
        };
        let (pipe, sets) = pipeline(false);
        if sets.is_empty() {
            return Ok(Vec::new());
        }
        let missing = |per_set: Vec<Vec<String>>| {
            sets.iter()
                .zip(per_set)
                .flat_map(|(set, ids)| ids.into_iter().map(|id| (set.to_string(), id)))
                .collect()
        };
        let mut con = self.con()?;
        let first: Result<Vec<Vec<String>>> = self
            .timed("rt_presence_refresh", pipe.query_async(&mut con))
            .await;
        if let Ok(per_set) = first {
            return Ok(missing(per_set));
        }
        // NOSCRIPT (a restarted Redis, or a cluster master that never ran it): send the body
        // once, which also caches it on every server that runs it.
        let (pipe, _) = pipeline(true);
        let per_set: Vec<Vec<String>> = self
            .timed("rt_presence_refresh", pipe.query_async(&mut con))
            .await?;
        Ok(missing(per_set))
    }

    async fn members(&self, set: &str, now: Millis) -> Result<Vec<PresenceMember>> {
        let [z, h, _] = self.keys.presence(set);
        let mut inv = MEMBERS_S.key(z);
        inv.key(h).arg(now);
        let flat: Vec<String> = self.run("rt_presence_members", inv).await?;
        Ok(pairs(&flat))
    }

    async fn member(&self, set: &str, id: &str, now: Millis) -> Result<Option<String>> {
        let [z, h, _] = self.keys.presence(set);
        let mut pipe = redis::pipe();
        pipe.zscore(&z, id).hget(&h, id);
        let mut con = self.con()?;
        let (score, info): (Option<f64>, Option<String>) = self
            .timed("rt_presence_member", pipe.query_async(&mut con))
            .await?;
        Ok(info.filter(|_| score.is_some_and(|s| s > now as f64)))
    }

    async fn sweep(&self, now: Millis, max_sets: usize) -> Result<Vec<Expired>> {
        let index = self.keys.presence_index();
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(&index)
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(redis_count(max_sets));
        let mut con = self.con()?;
        let due: Vec<String> = self
            .timed("rt_presence_sweep", cmd.query_async(&mut con))
            .await?;
        let mut out = Vec::new();
        for set in due {
            let [z, h, s] = self.keys.presence(&set);
            let mut inv = SWEEP_S.key(z);
            inv.key(h).key(s).arg(now).arg(STATE_TTL_MS);
            let flat: Vec<String> = self.run("rt_presence_sweep", inv).await?;
            let (g, next) = match flat.as_slice() {
                [g, next, ..] => (g.parse::<i64>().unwrap_or(0), next.clone()),
                _ => (0, "-1".to_string()),
            };
            let mut inv = INDEX_SWEPT_S.key(&index);
            inv.arg(&set).arg(next).arg(now);
            let _: i64 = self.run("rt_presence_index", inv).await?;
            let members = pairs(flat.get(2..).unwrap_or_default());
            let offline = generation(g);
            if !members.is_empty() || offline.is_some() {
                out.push(Expired {
                    set,
                    members,
                    offline,
                });
            }
        }
        Ok(out)
    }

    async fn settle(&self, set: &str, generation: u64, online: bool) -> Result<bool> {
        let [_, _, s] = self.keys.presence(set);
        let mut inv = SETTLE_S.key(s);
        inv.arg(generation).arg(if online { "1" } else { "0" });
        let settled: i64 = self.run("rt_presence_settle", inv).await?;
        Ok(settled == 1)
    }
}
