//! The Lua scripts of the stream store: one per atomic change of one stream.
//!
//! Why a script per change: the tail check and the write must be one step, or two nodes could
//! both append after the same tail. Every script touches only the keys of one stream (one
//! hash tag, see [`crate::keys`]), so it is valid on Redis Cluster, and Redis runs scripts one
//! at a time, which totally orders the commits of all nodes.
//!
//! Conventions: offsets and deadlines travel as the caller's decimal strings and are stored
//! as such (the tail is compared as a string, so all 64 bits count). Chunk entries of the
//! Redis Stream have the id `<offset>-1` (Redis refuses `0-0`), so `XRANGE` by id is a range
//! by offset. Scripts validate before they write: a script that fails half-way would leave its
//! first writes in place (Redis does not roll back).
//!
//! Notifications are `<node id> <tail or -> <Redis time in ms> <path>`: the time lets each
//! subscriber measure the pub/sub lag (same clock as its own only on one host, or with NTP).

/// Commits a change if the stored tail (and, when asked, the stored state) is the expected
/// one, then notifies other nodes.
/// KEYS: meta, chunks. ARGV: expected tail, new tail, expires_at or '', state, channel,
/// notification prefix (`<node id> `), path, check-state flag ('1'), expected state, then
/// offset/data pairs.
/// Returns 0 conflict (or no stream), 1 written, 2 written and `exp` changed.
pub const COMMIT: &str = r"
local m, c = KEYS[1], KEYS[2]
local cur = redis.call('HMGET', m, 'tail', 'exp', 'state')
if cur[1] ~= ARGV[1] then return 0 end
if ARGV[8] == '1' and cur[3] ~= ARGV[9] then return 0 end
for i = 10, #ARGV, 2 do
  redis.call('XADD', c, ARGV[i] .. '-1', 'd', ARGV[i + 1])
end
redis.call('HSET', m, 'tail', ARGV[2], 'state', ARGV[4])
local changed = 1
if ARGV[3] == '' then
  if cur[2] then redis.call('HDEL', m, 'exp'); changed = 2 end
else
  if cur[2] ~= ARGV[3] then redis.call('HSET', m, 'exp', ARGV[3]); changed = 2 end
end
local t = redis.call('TIME')
local ms = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
redis.call('PUBLISH', ARGV[5], ARGV[6] .. ARGV[2] .. ' ' .. ms .. ' ' .. ARGV[7])
return changed
";

/// Creates a stream unless its metadata exists.
/// KEYS: meta, chunks, segments. ARGV: tail, expires_at or '', state, then offset/data pairs.
/// Returns 1 created, 0 exists.
pub const CREATE: &str = r"
local m, c, g = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', m) == 1 then return 0 end
redis.call('DEL', c, g)
if ARGV[2] == '' then
  redis.call('HSET', m, 'tail', ARGV[1], 'state', ARGV[3])
else
  redis.call('HSET', m, 'tail', ARGV[1], 'state', ARGV[3], 'exp', ARGV[2])
end
for i = 4, #ARGV, 2 do
  redis.call('XADD', c, ARGV[i] .. '-1', 'd', ARGV[i + 1])
end
return 1
";

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

/// Records a segment and trims the hot chunks it covers (always a prefix of the hot chunks:
/// segments are contiguous from the stream's first offset).
/// KEYS: meta, chunks, segments. ARGV: segment end, encoded segment. Returns 1, or 0 if the
/// stream does not exist.
pub const SEAL: &str = r"
local m, c, g = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', m) == 0 then return 0 end
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

/// Deletes a stream and notifies other nodes. KEYS: meta, chunks, segments.
/// ARGV: channel, notification prefix (`<node id> - `), path. Returns 1 deleted, 0 none.
pub const DELETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local t = redis.call('TIME')
local ms = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ms .. ' ' .. ARGV[3])
return 1
";
