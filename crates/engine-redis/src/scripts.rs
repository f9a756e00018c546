//! The Lua scripts: every compare-and-set and every multi-key update of one object.
//!
//! Why Lua: Redis runs a script atomically, so "read the version, compare, write" cannot
//! interleave with another client, on one node or many. On Redis Cluster each script touches
//! only keys of one hash tag (see [`crate::keys`]); on a standalone server the session
//! scripts also write the indexes of other tags (outbox index, expiry index, the user's
//! index), so a session write is one round trip there. Either way every key a script touches
//! is passed in `KEYS`: the caller names the optional ones only when not on a cluster. Scripts are sent with
//! `EVALSHA` by [`redis::Script`], which loads them on `NOSCRIPT` (after a restart/failover).
//!
//! Conventions: numbers arrive as decimal strings and are compared with `tonumber` (unix
//! milliseconds are exact in a double); values that are stored or passed on (deadlines,
//! versions) are copied as the caller's strings, never re-formatted by Lua, so nothing turns
//! into `1.7e+12`. Versions are compared as strings, so all 64 bits count.

use redis::Script;

/// Shared Lua helper: a score or stored deadline as a number (`inf` aware, nil on garbage).
const NUM: &str = r"
local function num(s)
  if s == 'inf' or s == '+inf' then return math.huge end
  return tonumber(s)
end
";

/// Shared Lua helper of the session scripts (and the update script): arms a session hash's
/// native TTL at its deadline `at` (a decimal string) plus `GRACE` ms, which the script text
/// defines (see [`Scripts::new`]). Redis forgets a session only that long after it ended:
/// until then the expiry sweep finds it, deletes it and queues its event in one script.
pub(crate) const EXPIRE_AT: &str = r"
local function expire_at(k, at)
  redis.call('PEXPIREAT', k, string.format('%.0f', tonumber(at) + GRACE))
end
";

/// Shared Lua helper of the session scripts: queues event `e` (nothing when empty) in the
/// outbox stream `ob` (in the session's slot), so the event is written by the same script as
/// the change (`sessiond_store::outbox`), and names the outbox in the index `ix`. On a
/// standalone server the caller passes `ix` and the script adds it itself; on Redis Cluster
/// the index lives in another slot, so the script returns `'1'` when the caller must add it
/// after the script, which is only when the index may not name the outbox: it was empty (a
/// relay may have dropped it from the index), or its oldest event waited longer than a relay
/// takes (the writer that should have indexed it died first). Returns `''` otherwise.
const OUTBOX: &str = r"
local function outbox(e, ob, ix)
  if e == nil or e == '' then return '' end
  local id = redis.call('XADD', ob, '*', 'd', e)
  if ix then
    redis.call('SADD', ix, ob)
    return ''
  end
  if redis.call('XLEN', ob) == 1 then return '1' end
  local oldest = redis.call('XRANGE', ob, '-', '+', 'COUNT', 1)[1][1]
  local ms = function(x) return tonumber(string.match(x, '^(%d+)')) end
  if ms(id) - ms(oldest) > 5000 then return '1' end
  return ''
end
";

/// Inserts a session unless a live one (at `ARGV[1]`, the record's `created_at`) exists.
/// KEYS: session hash, outbox, then on a standalone server (`Keys` of other slots): outbox
/// index, expiry-index partition, and the user's index when the session has a user.
/// ARGV: created_at, expires_at, event, session id, room ('' none: see
/// `SessionStore::insert_session_if_room`; needs the user's index), field/value pairs.
/// Returns {written (1, 0 a live id, 2 no room), outbox flag (see `outbox`)}.
const SESSION_INSERT: &str = r"
local k = KEYS[1]
if ARGV[5] ~= '' and redis.call('ZCARD', KEYS[5]) >= num(ARGV[5]) then return {2, ''} end
local d = redis.call('HMGET', k, 'idle_expires_at', 'absolute_expires_at')
local idle, abs = num(d[1]), num(d[2])
if idle and abs and num(ARGV[1]) < math.min(idle, abs) then return {0, ''} end
if KEYS[4] then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[4]) end
redis.call('DEL', k)
redis.call('HSET', k, unpack(ARGV, 6, #ARGV))
expire_at(k, ARGV[2])
if KEYS[5] then redis.call('ZADD', KEYS[5], ARGV[1], ARGV[4]) end
return {1, outbox(ARGV[3], KEYS[2], KEYS[3])}
";

/// Compare-and-set of a live session's version; keeps the stored `user_id`.
/// KEYS: session hash, outbox, outbox index (standalone only). ARGV: now, expected version,
/// new expires_at, has-device flag, event, field/value pairs.
/// Returns {0} missing, {1} version mismatch, {2, outbox flag} written.
const SESSION_REPLACE: &str = r"
local k = KEYS[1]
local d = redis.call('HMGET', k, 'idle_expires_at', 'absolute_expires_at', 'version')
local idle, abs = num(d[1]), num(d[2])
if not (idle and abs and d[3]) then return {0, ''} end
if num(ARGV[1]) >= math.min(idle, abs) then return {0, ''} end
if d[3] ~= ARGV[2] then return {1, ''} end
if ARGV[4] == '0' then redis.call('HDEL', k, 'device') end
redis.call('HSET', k, unpack(ARGV, 6, #ARGV))
expire_at(k, ARGV[3])
return {2, outbox(ARGV[5], KEYS[2], KEYS[3])}
";

/// Rotation: moves a live session at the expected version to a new id, keeping `user_id` and
/// `origin`. Both hashes share a slot (the new id is chosen so, see `slots.rs`).
/// KEYS: old hash, new hash, outbox, then on a standalone server: outbox index, the new id's
/// expiry-index partition, and the index of the user the caller read (when it has one).
/// ARGV: now, expected version, new expires_at, event, old id, new id, the user the caller
/// read ('' none), created_at, field/value pairs.
/// Returns {outcome, user, outbox flag, reindexed}: outcome 0 missing, 1 version mismatch,
/// 2 rotated, 3 new id taken (live); reindexed is 1 when the script moved the user's index
/// member (the stored user is the one the caller named), else the caller moves it.
const SESSION_ROTATE: &str = r"
local o, n = KEYS[1], KEYS[2]
local d = redis.call('HMGET', o, 'idle_expires_at', 'absolute_expires_at', 'version',
  'user_id', 'origin')
local idle, abs = num(d[1]), num(d[2])
if not (idle and abs and d[3]) then return {0, '', '', 0} end
if num(ARGV[1]) >= math.min(idle, abs) then return {0, '', '', 0} end
if d[3] ~= ARGV[2] then return {1, '', '', 0} end
local e = redis.call('HMGET', n, 'idle_expires_at', 'absolute_expires_at')
local ni, na = num(e[1]), num(e[2])
if ni and na and num(ARGV[1]) < math.min(ni, na) then return {3, '', '', 0} end
if KEYS[5] then redis.call('ZADD', KEYS[5], ARGV[3], ARGV[6]) end
redis.call('DEL', n)
redis.call('HSET', n, unpack(ARGV, 9, #ARGV))
if d[4] then redis.call('HSET', n, 'user_id', d[4]) end
if d[5] then redis.call('HSET', n, 'origin', d[5]) end
expire_at(n, ARGV[3])
redis.call('DEL', o)
local flag = outbox(ARGV[4], KEYS[3], KEYS[4])
local reindexed = 0
if d[4] and KEYS[6] and d[4] == ARGV[7] then
  redis.call('ZADD', KEYS[6], ARGV[8], ARGV[6])
  redis.call('ZREM', KEYS[6], ARGV[5])
  reindexed = 1
end
return {2, d[4] or '', flag, reindexed}
";

/// Moves the idle deadline and `last_seen_at` forward only, re-arming the native TTL.
/// KEYS: session hash. ARGV: now, idle_expires_at ('' for now + the stored idle window),
/// last_seen_at, reply ('1' for the record). Returns 1 or 0 (not live); with reply '1' the
/// hash's fields and values as they now are, none when not live.
const SESSION_TOUCH: &str = r"
local k = KEYS[1]
local d = redis.call('HMGET', k, 'idle_expires_at', 'absolute_expires_at', 'last_seen_at',
  'idle_ttl_ms')
local idle, abs = num(d[1]), num(d[2])
local gone = 0
if ARGV[4] == '1' then gone = {} end
if not (idle and abs) then return gone end
if num(ARGV[1]) >= math.min(idle, abs) then return gone end
local target = ARGV[2]
if target == '' then target = string.format('%.0f', num(ARGV[1]) + (num(d[4]) or 0)) end
local new_idle = d[1]
if num(target) > idle then new_idle = target end
local new_seen = d[3]
if not new_seen or num(ARGV[3]) > (num(new_seen) or 0) then new_seen = ARGV[3] end
redis.call('HSET', k, 'idle_expires_at', new_idle, 'last_seen_at', new_seen)
if num(new_idle) < abs then expire_at(k, new_idle) else expire_at(k, d[2]) end
if ARGV[4] == '1' then return redis.call('HGETALL', k) end
return 1
";

/// Deletes a session, optionally only if it belongs to `ARGV[3]` (when `ARGV[2]` is `1`).
/// KEYS: session hash, outbox, then on a standalone server: outbox index, and the index of
/// the user the caller names (`ARGV[3]`, when it knows one). ARGV: now, owner-check flag,
/// owner, event (queued only when a live record was deleted), session id.
/// Returns {live, has_user, user, outbox flag, unindexed}: live is 1 if a live record was
/// deleted, 0 if none/expired, -1 if it belongs to another user (kept); unindexed is 1 when
/// the script removed the member from the user's index, else the caller removes it.
const SESSION_DELETE: &str = r"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return {0, 0, '', '', 0} end
local d = redis.call('HMGET', k, 'idle_expires_at', 'absolute_expires_at', 'user_id')
if ARGV[2] == '1' and d[3] ~= ARGV[3] then return {-1, 0, '', '', 0} end
redis.call('DEL', k)
local live, flag = 0, ''
local idle, abs = num(d[1]), num(d[2])
if idle and abs and num(ARGV[1]) < math.min(idle, abs) then live = 1 end
if live == 1 then flag = outbox(ARGV[4], KEYS[2], KEYS[3]) end
if not d[3] then return {live, 0, '', flag, 0} end
local unindexed = 0
if KEYS[4] and d[3] == ARGV[3] then
  redis.call('ZREM', KEYS[4], ARGV[5])
  unindexed = 1
end
return {live, 1, d[3], flag, unindexed}
";

/// Admits a namespace under the namespace-count limit, atomically on the registry.
/// KEYS: registry. ARGV: namespace, now, max namespaces, score (expires_at or `+inf`).
/// A namespace already registered as live at `now` is always admitted (its score only grows).
/// Returns 1 admitted, 0 refused.
const CACHE_RESERVE: &str = r"
local reg, ns = KEYS[1], ARGV[1]
local now = num(ARGV[2])
local cur = redis.call('ZSCORE', reg, ns)
if cur and num(cur) > now then
  redis.call('ZADD', reg, 'GT', ARGV[4], ns)
  return 1
end
if redis.call('ZCOUNT', reg, '(' .. ARGV[2], '+inf') >= num(ARGV[3]) then return 0 end
redis.call('ZADD', reg, ARGV[4], ns)
return 1
";

/// Writes one cache entry and its index member; the index key lives as long as its
/// longest-lived entry (persistent once any entry never expires).
/// KEYS: entry, index. ARGV: member (raw key), value, stored_at, expires_at or '', score.
const CACHE_PUT: &str = r"
local e, idx = KEYS[1], KEYS[2]
redis.call('DEL', e)
if ARGV[4] == '' then
  redis.call('HSET', e, 'v', ARGV[2], 's', ARGV[3])
else
  redis.call('HSET', e, 'v', ARGV[2], 's', ARGV[3], 'e', ARGV[4])
  redis.call('PEXPIREAT', e, ARGV[4])
end
local existed = redis.call('EXISTS', idx)
local ttl = redis.call('PEXPIRETIME', idx)
redis.call('ZADD', idx, ARGV[5], ARGV[1])
if ARGV[4] == '' then
  redis.call('PERSIST', idx)
elseif existed == 0 or (ttl >= 0 and ttl < num(ARGV[4])) then
  redis.call('PEXPIREAT', idx, ARGV[4])
end
return 1
";

/// Deletes one cache entry. KEYS: entry, index. ARGV: member, now.
/// Returns {live, remaining live members of the namespace at now}.
const CACHE_DELETE: &str = r"
local e, idx = KEYS[1], KEYS[2]
local exp = redis.call('HGET', e, 'e')
local existed = redis.call('DEL', e)
redis.call('ZREM', idx, ARGV[1])
local live = 0
if existed == 1 and (not exp or num(ARGV[2]) < (num(exp) or 0)) then live = 1 end
return {live, redis.call('ZCOUNT', idx, '(' .. ARGV[2], '+inf')}
";

/// Deletes a batch of entries of one namespace. KEYS: index, entry keys. ARGV: now, mode
/// (`clear`: delete all, count live ones; `sweep`: delete only members whose score is still
/// <= now, count removed members), members (one per entry key).
const CACHE_DELETE_MANY: &str = r"
local idx, now, mode = KEYS[1], num(ARGV[1]), ARGV[2]
local n = 0
for i = 2, #KEYS do
  local m = ARGV[i + 1]
  local sc = num(redis.call('ZSCORE', idx, m))
  if mode == 'clear' then
    if redis.call('DEL', KEYS[i]) == 1 and sc and sc > now then n = n + 1 end
    redis.call('ZREM', idx, m)
  elseif sc and sc <= now then
    redis.call('DEL', KEYS[i])
    n = n + redis.call('ZREM', idx, m)
  end
end
return n
";

/// Creates or replaces an alarm. KEYS: due, lex, records. ARGV: member, due_at, JSON.
const ALARM_PUT: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
";

/// Deletes an alarm if it exists and, when `ARGV[2]` is not empty, is due exactly then.
/// KEYS: due, lex, records. ARGV: member, due_at guard or ''. Returns 1 deleted, 0 kept.
const ALARM_DELETE: &str = r"
local sc = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not sc then return 0 end
if ARGV[2] ~= '' and num(sc) ~= num(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
";

/// Replaces an alarm only if it exists and is due exactly at `ARGV[2]`.
/// KEYS: due, lex, records. ARGV: member, expected due_at, new due_at, JSON. Returns 1 or 0.
const ALARM_RESCHEDULE: &str = r"
local sc = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not sc or num(sc) ~= num(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
return 1
";

/// Deletes every alarm of one object. KEYS: due, lex, records. ARGV: lex min, lex max.
/// Returns how many were deleted.
const ALARM_DROP_OBJECT: &str = r"
local ms = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2])
for _, m in ipairs(ms) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
end
return #ms
";

/// Compare-and-set of one object's state. KEYS: state. ARGV: expected-present flag, expected,
/// new-present flag, new state. Returns 1 written, 0 the stored state differs.
const OBJECT_SWAP: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if ARGV[3] == '1' then redis.call('SET', KEYS[1], ARGV[4]) else redis.call('DEL', KEYS[1]) end
return 1
";

/// Takes the outbox relay lease if free, or renews it for its holder (`Outbox::outbox_lease`).
/// KEYS: lease. ARGV: holder, TTL (ms). Returns 1 held, 0 another holder's lease runs.
const RELAY_LEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Deletes the outbox relay lease if `holder` holds it. KEYS: lease. ARGV: holder.
const RELAY_RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Reads every indexed outbox stream in one step (standalone servers only: it touches keys it
/// was not given, which a cluster refuses). KEYS: the outbox index. ARGV: the read's limit.
/// Returns `per_queue` (as text), then `stream, entry id, data` per event: each stream's
/// oldest `per_queue` events, `per_queue` = the limit shared out over the streams (at least 1).
/// One script, so the read is a snapshot: see `Outbox::outbox_read`.
const OUTBOX_READ: &str = r"
local streams = redis.call('SMEMBERS', KEYS[1])
table.sort(streams)
local per_queue = math.max(1, math.ceil(tonumber(ARGV[1]) / math.max(1, #streams)))
local out = {tostring(per_queue)}
for _, s in ipairs(streams) do
  for _, e in ipairs(redis.call('XRANGE', s, '-', '+', 'COUNT', per_queue)) do
    local f = e[2]
    if #f ~= 2 then return redis.error_reply('outbox entry without data') end
    out[#out + 1] = s
    out[#out + 1] = e[1]
    out[#out + 1] = f[2]
  end
end
return out
";

/// The compiled scripts (each holds its SHA1 for `EVALSHA`).
pub struct Scripts {
    pub session_insert: Script,
    pub session_replace: Script,
    pub session_update: Script,
    pub session_touch: Script,
    pub session_rotate: Script,
    pub session_delete: Script,
    pub session_delete_checked: Script,
    pub session_claim_expired: Script,
    pub cache_reserve: Script,
    pub cache_put: Script,
    pub cache_delete: Script,
    pub cache_delete_many: Script,
    pub object_swap: Script,
    pub alarm_put: Script,
    pub alarm_delete: Script,
    pub alarm_reschedule: Script,
    pub alarm_drop_object: Script,
    pub stream_create: Script,
    pub stream_read: Script,
    pub stream_seal: Script,
    pub stream_delete: Script,
    pub stream_fork_create: Script,
    pub stream_fork_delete: Script,
    pub stream_trim: Script,
    pub stream_drop_chunks: Script,
    pub seal_lease: Script,
    pub relay_lease: Script,
    pub relay_release: Script,
    pub outbox_read: Script,
    pub fork_prepare_create: Script,
    pub fork_prepare_delete: Script,
    pub fork_link: Script,
    pub fork_abort: Script,
    pub fork_settle: Script,
}

fn with_helpers(body: &str) -> Script {
    Script::new(&format!("{NUM}{body}"))
}

/// The `GRACE` constant of the session scripts: `grace_ms` as a Lua number.
fn grace(grace_ms: u64) -> String {
    format!("local GRACE = {grace_ms}\n")
}

impl Scripts {
    /// Compiles every script (hashing only; loading happens on first use). Session hashes
    /// live `session_grace_ms` past their deadline (see [`EXPIRE_AT`]).
    pub fn new(session_grace_ms: u64) -> Self {
        let grace = grace(session_grace_ms);
        // A session script: the helpers, the native-TTL helper and the outbox helper.
        let session_script =
            |body: &str| Script::new(&format!("{grace}{NUM}{EXPIRE_AT}{OUTBOX}{body}"));
        // A session script that fills in an event template (`session_update`).
        let json_script = |body: &str| {
            let json = crate::session_update::JSON_TEXT;
            Script::new(&format!("{grace}{EXPIRE_AT}{OUTBOX}{json}{body}"))
        };
        Scripts {
            session_insert: session_script(SESSION_INSERT),
            session_replace: session_script(SESSION_REPLACE),
            session_update: json_script(crate::session_update::SESSION_UPDATE),
            session_delete_checked: json_script(crate::session_update::SESSION_DELETE_CHECKED),
            session_touch: session_script(SESSION_TOUCH),
            session_rotate: session_script(SESSION_ROTATE),
            session_delete: session_script(SESSION_DELETE),
            session_claim_expired: session_script(crate::session_expiry::CLAIM),
            cache_reserve: with_helpers(CACHE_RESERVE),
            cache_put: with_helpers(CACHE_PUT),
            cache_delete: with_helpers(CACHE_DELETE),
            cache_delete_many: with_helpers(CACHE_DELETE_MANY),
            object_swap: Script::new(OBJECT_SWAP),
            alarm_put: with_helpers(ALARM_PUT),
            alarm_delete: with_helpers(ALARM_DELETE),
            alarm_reschedule: with_helpers(ALARM_RESCHEDULE),
            alarm_drop_object: with_helpers(ALARM_DROP_OBJECT),
            stream_create: Script::new(crate::stream_scripts::CREATE),
            stream_read: Script::new(crate::stream_scripts::READ),
            stream_seal: Script::new(crate::stream_scripts::SEAL),
            stream_delete: Script::new(crate::stream_scripts::DELETE),
            stream_fork_create: Script::new(crate::stream_scripts::FORK_CREATE),
            stream_fork_delete: Script::new(crate::stream_scripts::FORK_DELETE),
            stream_trim: Script::new(crate::stream_scripts::TRIM),
            stream_drop_chunks: Script::new(crate::stream_scripts::DROP_CHUNKS),
            seal_lease: Script::new(crate::stream_scripts::SEAL_LEASE),
            relay_lease: Script::new(RELAY_LEASE),
            relay_release: Script::new(RELAY_RELEASE),
            outbox_read: Script::new(OUTBOX_READ),
            fork_prepare_create: Script::new(crate::stream_forks::PREPARE_CREATE),
            fork_prepare_delete: Script::new(crate::stream_forks::PREPARE_DELETE),
            fork_link: Script::new(crate::stream_forks::LINK),
            fork_abort: Script::new(crate::stream_forks::ABORT),
            fork_settle: Script::new(crate::stream_forks::SETTLE),
        }
    }
}
