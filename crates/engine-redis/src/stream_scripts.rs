//! The Lua scripts of the stream store: one per atomic change.
//!
//! Why a script per change: the tail check and the write must be one step, or two nodes could
//! both append after the same tail. Redis runs scripts one at a time, which totally orders the
//! commits of all nodes. Every script but the two fork scripts touches only the keys of one
//! stream (one hash tag, see [`crate::keys`]), so it is valid on Redis Cluster; the fork
//! scripts span the fork's and the source's hash tags (see `FORK_CREATE`) and run on a
//! standalone Redis only (`stream_forks.rs` has the Cluster protocol).
//!
//! Conventions: offsets and deadlines travel as the caller's decimal strings and are stored
//! as such (the tail is compared as a string, so all 64 bits count). Chunk entries of the
//! Redis Stream have the id `<offset>-1` (Redis refuses `0-0`), so `XRANGE` by id is a range
//! by offset. Scripts validate before they write: a script that fails half-way would leave its
//! first writes in place (Redis does not roll back).
//!
//! Producer rows: the hash `p` maps a producer id to `<used_at> <state bytes>`, and the sorted
//! set `pu` scores each id by `used_at`, so the eviction order `(used_at, id)` is the set's own
//! order (equal scores sort by member bytes). A row is written ([`producer_row`]) and read
//! back ([`decode_producer`]) here, beside the scripts that store it, so the commit queue and
//! the readers both depend on this file and not on each other.
//!
//! Notifications are `<node id> <tail or -> <Redis time in ms> <path>`: the time lets each
//! subscriber measure the pub/sub lag (same clock as its own only on one host, or with NTP).

use sessiond_store::{ProducerRecord, Result, StoreError};

/// A producer row as stored: `<used_at> <state bytes>`.
pub(crate) fn producer_row(r: &ProducerRecord) -> Vec<u8> {
    let mut out = format!("{} ", r.used_at).into_bytes();
    out.extend_from_slice(&r.state);
    out
}

/// Decodes a stored producer row of `id`.
pub(crate) fn decode_producer(id: &str, raw: &[u8]) -> Result<ProducerRecord> {
    let corrupt = || StoreError::Corrupt(format!("stream producer {id}: malformed row"));
    let space = raw.iter().position(|b| *b == b' ').ok_or_else(corrupt)?;
    let used_at = std::str::from_utf8(&raw[..space])
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(corrupt)?;
    Ok(ProducerRecord {
        id: id.to_owned(),
        state: raw[space + 1..].to_vec(),
        used_at,
    })
}

/// Lua helpers shared by the scripts (each script is one self-contained source).
macro_rules! lua_helpers {
    () => {
        r"
-- Replaces the state of meta hash `m` and its `exp` ('' = none), not its tail.
-- Returns 2 when `exp` changed (the expiry index must follow), else 1.
local function set_state(m, exp, state)
  local old = redis.call('HGET', m, 'exp')
  redis.call('HSET', m, 'state', state)
  if exp == '' then
    if old then redis.call('HDEL', m, 'exp'); return 2 end
  elseif old ~= exp then
    redis.call('HSET', m, 'exp', exp); return 2
  end
  return 1
end

-- Replaces the tail and state of meta hash `m` and its `exp` ('' = none), as `set_state`.
local function set_meta(m, tail, exp, state)
  redis.call('HSET', m, 'tail', tail)
  return set_state(m, exp, state)
end

-- True when meta hash `m` exists and, if `check` starts with '1', holds `state`, and if
-- `check` goes on with ' <max start>', its retained start is at most that (a fork's source:
-- its tail is not compared, see `FORK_CREATE`; the start is, see `ForkSource::max_start`).
local function source_is(m, check, state)
  local cur = redis.call('HMGET', m, 'state', 'start')
  if not cur[1] then return false end
  local max = string.match(check, '^%d (%d+)$')
  if max and tonumber(cur[2] or '0') > tonumber(max) then return false end
  return string.sub(check, 1, 1) ~= '1' or cur[1] == state
end

-- Publishes `head .. <Redis ms> .. ' ' .. path` on `channel`.
local function notify(channel, head, path)
  local t = redis.call('TIME')
  local ms = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  redis.call('PUBLISH', channel, head .. ms .. ' ' .. path)
end

-- Appends the offset/data pairs of ARGV from index `at` to chunk stream `c`, each offset
-- moved by `shift` when given (offsets below 2^53 then, which Lua numbers hold exactly).
local function add_chunks(c, at, shift)
  for i = at, #ARGV, 2 do
    local off = ARGV[i]
    if shift and shift ~= 0 then off = string.format('%d', tonumber(off) + shift) end
    redis.call('XADD', c, off .. '-1', 'd', ARGV[i + 1])
  end
end
"
    };
}

pub(crate) use lua_helpers;

/// Commits a change if the stored tail (and, when asked, the stored state) is the expected
/// one, writes its producer rows, then notifies other nodes.
///
/// An append (`StreamStore::append_checked`, move flag '1') also requires each listed
/// producer row to hold the listed state, and when only the tail differs and the append
/// leaves the state as it is (new state = expected state), it is **moved** to the stored
/// tail: the caller decided nothing on the tail, so the outcome is the one it would have
/// decided on the stored metadata, without the lost compare and the retry.
/// KEYS: meta, chunks, producers, producer use. ARGV: expected tail, new tail, expires_at or
/// '', state, channel, notification prefix (`<node id> `), path, check-state flag ('1'),
/// expected state, max producers (0 = no cap), upsert count n, move flag ('1'), required
/// row count k, then k pairs (id, '=' .. state, or '' for no row), then n triples (id,
/// used_at, row value), then offset/data pairs.
/// Returns 1 written, 2 written and `exp` changed, {1 or 2, new tail} written moved, or on a
/// conflict (or no stream) {0, tail, exp, state, pend, start} as stored (each nil when
/// absent).
pub const COMMIT: &str = concat!(
    lua_helpers!(),
    r"
local m, c, p, pu = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cur = redis.call('HMGET', m, 'tail', 'state')
local won = cur[1] and (ARGV[8] ~= '1' or cur[2] == ARGV[9])
local shift = 0
if won and cur[1] ~= ARGV[1] then
  won = ARGV[12] == '1' and ARGV[4] == ARGV[9]
    and tonumber(cur[1]) < 2^53 and tonumber(ARGV[2]) < 2^53
  if won then shift = tonumber(cur[1]) - tonumber(ARGV[1]) end
end
local k = tonumber(ARGV[13])
if won then
  for i = 14, 13 + 2 * k, 2 do
    local row, have = redis.call('HGET', p, ARGV[i]), ''
    if row then have = '=' .. string.sub(row, string.find(row, ' ', 1, true) + 1) end
    if have ~= ARGV[i + 1] then won = false; break end
  end
end
if not won then
  -- What won, so the writer decides its retry without reading it again.
  cur = redis.call('HMGET', m, 'tail', 'exp', 'state', 'pend', 'start')
  return {0, cur[1], cur[2], cur[3], cur[4], cur[5]}
end
local tail = ARGV[2]
if shift ~= 0 then tail = string.format('%d', tonumber(tail) + shift) end
local at = 14 + 2 * k
local n = tonumber(ARGV[11])
add_chunks(c, at + 3 * n, shift)
local changed = set_meta(m, tail, ARGV[3], ARGV[4])
local mine = {}
for i = at, at - 1 + 3 * n, 3 do
  redis.call('HSET', p, ARGV[i], ARGV[i + 2])
  redis.call('ZADD', pu, ARGV[i + 1], ARGV[i])
  mine[ARGV[i]] = true
end
local max = tonumber(ARGV[10])
if n > 0 and max > 0 then
  local surplus = redis.call('ZCARD', pu) - max
  if surplus > 0 then
    -- The oldest rows, skipping the ones this commit wrote (at most n of them).
    for _, id in ipairs(redis.call('ZRANGE', pu, 0, surplus + n - 1)) do
      if surplus == 0 then break end
      if not mine[id] then
        redis.call('HDEL', p, id)
        redis.call('ZREM', pu, id)
        surplus = surplus - 1
      end
    end
  end
end
notify(ARGV[5], ARGV[6] .. tail .. ' ', ARGV[7])
if shift ~= 0 then return {changed, tail} end
return changed
"
);

/// Creates a stream unless its metadata exists, with its first chunks and producer rows.
/// KEYS: meta, chunks, segments, producers, producer use. ARGV: tail, expires_at or '',
/// state, start, producer row count n, then n triples (id, used_at, row value), then
/// offset/data pairs. Returns 1 created, 0 exists.
pub const CREATE: &str = concat!(
    lua_helpers!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
set_meta(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'start', ARGV[4])
local rows = 6 + 3 * tonumber(ARGV[5])
for i = 6, rows - 1, 3 do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[5], ARGV[i + 1], ARGV[i])
end
add_chunks(KEYS[2], rows)
return 1
"
);

/// Creates a fork and, in the same step, replaces its source's state and expiry if the
/// source exists (and, when asked, holds the expected state). The source's tail is neither
/// compared nor written: a fork depends only on data below its fork point, which appends (of
/// any node, between the capability's read and this script) never change.
///
/// Why one script over two hash tags: the fork and the source's reference count must change
/// together (a crash between two steps would leave the source counting a fork that does not
/// exist, or a fork the source does not count). A standalone Redis runs any script atomically
/// whatever its keys; Redis Cluster refuses keys of two slots in one script (`CROSSSLOT`), so
/// there the engine runs the protocol of `stream_forks.rs` instead.
/// KEYS: fork meta, chunks, segments, producers, producer use, source meta.
/// ARGV: fork tail, fork expires_at or '', fork state, then the source arguments (check flag:
/// '1' compares the state, then optionally ' <max start>'; expected state, new expires_at or
/// '', new state), fork start, then the fork's
/// offset/data pairs. Returns 0 refused, 1 written.
pub const FORK_CREATE: &str = concat!(
    lua_helpers!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not source_is(KEYS[6], ARGV[4], ARGV[5]) then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
set_meta(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'start', ARGV[8])
add_chunks(KEYS[2], 9)
set_state(KEYS[6], ARGV[6], ARGV[7])
return 1
"
);

/// Deletes a fork and, in the same step, replaces its source's state and expiry if the source
/// exists (and, when asked, holds the expected state; its tail is not compared, as in
/// `FORK_CREATE`); notifies other nodes. Two hash tags, like `FORK_CREATE`.
/// KEYS: fork meta, chunks, segments, producers, producer use, source meta.
/// ARGV: channel, notification prefix (`<node id> - `), fork path, then the source arguments
/// (check flag as in `FORK_CREATE`, expected state, new expires_at or '', new state).
/// Returns 0 refused, 1 written.
pub const FORK_DELETE: &str = concat!(
    lua_helpers!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if not source_is(KEYS[6], ARGV[4], ARGV[5]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
set_state(KEYS[6], ARGV[6], ARGV[7])
notify(ARGV[1], ARGV[2], ARGV[3])
return 1
"
);

/// Hot chunks that end after `from`, stopping once `max` bytes were collected (at least one).
/// KEYS: chunks. ARGV: from, max bytes. Returns a flat list offset, data, offset, data...
pub const READ: &str = r"
local c = KEYS[1]
local from, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local out, bytes = {}, 0
local start = ARGV[1] .. '-1'
local before = redis.call('XREVRANGE', c, ARGV[1] .. '-1', '-', 'COUNT', 1)
if #before > 0 then start = before[1][1] end
while true do
  local batch = redis.call('XRANGE', c, start, '+', 'COUNT', 64)
  for _, e in ipairs(batch) do
    if #out > 0 and bytes >= max then return out end
    local off = string.sub(e[1], 1, -3)
    local data = e[2][2]
    if tonumber(off) + #data > from then
      out[#out + 1] = off
      out[#out + 1] = data
      bytes = bytes + #data
    end
  end
  if #batch < 64 then return out end
  start = '(' .. batch[#batch][1]
end
";

/// Records a segment and trims the hot chunks it covers (always a prefix of the hot chunks),
/// if the segment starts where the sealed range ends (the last segment's end, else the first
/// hot chunk) and the sealer's lease token is not older than the stream's `fence`.
/// KEYS: meta, chunks, segments. ARGV: segment end, encoded segment, segment start, lease
/// token ('0' = none). Returns 1, or 0 if refused or the stream does not exist.
pub const SEAL: &str = r"
local m, c, g = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', m) == 0 then return 0 end
local fence = redis.call('HGET', m, 'fence')
if fence and tonumber(ARGV[4]) < tonumber(fence) then return 0 end
local sealed
local last_seg = redis.call('LINDEX', g, -1)
if last_seg then
  sealed = string.match(last_seg, '^%d+ (%d+) ')
else
  local first = redis.call('XRANGE', c, '-', '+', 'COUNT', 1)
  if #first > 0 then sealed = string.sub(first[1][1], 1, -3) end
end
if sealed ~= ARGV[3] then return 0 end
if ARGV[4] ~= '0' then redis.call('HSET', m, 'fence', ARGV[4]) end
redis.call('RPUSH', g, ARGV[2])
local last = redis.call('XREVRANGE', c, '(' .. ARGV[1] .. '-0', '-', 'COUNT', 1)
if #last > 0 then
  local off = string.sub(last[1][1], 1, -3)
  if tonumber(off) + #last[1][2][2] <= tonumber(ARGV[1]) then
    redis.call('XTRIM', c, 'MINID', off .. '-2')
  else
    redis.call('XTRIM', c, 'MINID', last[1][1])
  end
end
return 1
";

/// Takes or renews the sealing lease. KEYS: lease, fence counter. ARGV: holder, TTL (ms).
/// Returns the holder's fencing token, or -1 while another holder's lease runs.
pub const SEAL_LEASE: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'holder', 'token')
if cur[1] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(cur[2])
end
if cur[1] then return -1 end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return token
";

/// Deletes a stream (metadata, chunks, segments, producer rows, fork links) and notifies
/// other nodes.
/// KEYS: meta, chunks, segments, producers, producer use, fork links. ARGV: channel,
/// notification prefix (`<node id> - `), path. Returns 1 deleted, 0 none.
pub const DELETE: &str = concat!(
    lua_helpers!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
notify(ARGV[1], ARGV[2], ARGV[3])
return 1
"
);

/// Retention (`StreamStore::trim_stream`): raises the retained start to `min(before, tail)`,
/// deletes at most `max` whole hot chunks below it (`XTRIM MINID`, lowest first) and pops the
/// segments that end at or below it, then notifies other nodes (their cached start is stale).
/// KEYS: meta, chunks, segments. ARGV: before, max chunks, channel, notification prefix
/// (`<node id> - `), path, check-state flag ('1'), expected state. Returns nil if the stream
/// does not exist or (when asked) its state is not the expected one, else
/// `{start, deleted, more (0/1), segment entries...}`.
pub const TRIM: &str = concat!(
    lua_helpers!(),
    r"
local m, c, g = KEYS[1], KEYS[2], KEYS[3]
local cur = redis.call('HMGET', m, 'tail', 'start', 'state')
if not cur[1] then return false end
if ARGV[6] == '1' and cur[3] ~= ARGV[7] then return false end
local start = cur[2] or '0'
local want = ARGV[1]
if tonumber(want) > tonumber(cur[1]) then want = cur[1] end
if tonumber(want) > tonumber(start) then
  start = want
  redis.call('HSET', m, 'start', start)
end
local limit = tonumber(ARGV[2])
local below = redis.call('XRANGE', c, '-', '(' .. start .. '-1', 'COUNT', limit + 1)
local whole = 0
for _, e in ipairs(below) do
  if tonumber(string.sub(e[1], 1, -3)) + #e[2][2] > tonumber(start) then break end
  whole = whole + 1
end
local deleted = math.min(whole, limit)
if deleted > 0 then
  redis.call('XTRIM', c, 'MINID', string.sub(below[deleted][1], 1, -3) .. '-2')
end
local out = {start, tostring(deleted), whole > deleted and '1' or '0'}
while true do
  local first = redis.call('LINDEX', g, 0)
  if not first then break end
  local seg_end = string.match(first, '^%d+ (%d+) ')
  if tonumber(seg_end) > tonumber(start) then break end
  redis.call('LPOP', g)
  out[#out + 1] = first
end
notify(ARGV[3], ARGV[4], ARGV[5])
return out
"
);

/// Keyed compaction (`StreamStore::drop_chunks`): deletes the chunk entries at the given
/// offsets if every one exists, else nothing (a chunk trimmed or sealed meanwhile means the
/// caller decided on stale data). No notification: the metadata does not change here (the
/// capability's commit that precedes it notifies).
/// KEYS: meta, chunks. ARGV: offsets. Returns 1 dropped, 0 nothing.
pub const DROP_CHUNKS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV do
  if #redis.call('XRANGE', KEYS[2], ARGV[i] .. '-1', ARGV[i] .. '-1') == 0 then return 0 end
end
for i = 1, #ARGV do
  redis.call('XDEL', KEYS[2], ARGV[i] .. '-1')
end
return 1
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_rows_round_trip_any_bytes() {
        let r = ProducerRecord {
            id: "p 1".into(),
            state: b"a b\x00c".to_vec(),
            used_at: -5,
        };
        assert_eq!(decode_producer("p 1", &producer_row(&r)).ok(), Some(r));
        assert!(decode_producer("p", b"12").is_err());
    }
}
