//! A session's data changed in one round trip: the merge runs inside Redis.
//!
//! Why not read, merge in the node and compare-and-set: that is two round trips per write at
//! best, and with several nodes behind a round-robin balancer every write of a busy session
//! races the others' and pays a third. Why not `cjson` in the script: it turns integers above
//! 2^53 into floats and cannot tell an empty array from an empty object, so it would change
//! data it does not touch. The script therefore merges JSON *texts*: it splits an object into
//! its members by scanning strings and brackets, never decoding a value, and copies every
//! member it does not change byte for byte. Its inputs are compact texts written by
//! `serde_json` (the stored data, and the change the node re-serialized), whose escaping is
//! canonical, so two keys are equal exactly when their texts are. Merged keys keep the stored
//! order and new ones follow; readers decode the data, so the order is not observable.

use std::collections::HashMap;

use sessiond_store::{DataChange, DataUpdate, Millis, Result, StoreError};

use crate::RedisEngine;

/// Text-level RFC 7396 merge and top-level merge of JSON objects, then the update itself.
/// KEYS: session hash. ARGV: now, mode (`replace`, `merge`, `shallow`), change (JSON object
/// text), expected version or '', max data bytes.
/// Returns {'0'} missing, {'1', stored version} version mismatch, {'3', data length} too
/// large, {'2', '', field, value, ...} written, with every field of the hash as it now is.
/// Compiled behind the native-TTL helper `expire_at` (`scripts::EXPIRE_AT`).
pub const SESSION_UPDATE: &str = r#"
local function str_end(s, i)
  local j = i + 1
  while true do
    local k = string.find(s, '["\\]', j)
    if not k then return error('unterminated JSON string') end
    if string.sub(s, k, k) == '"' then return k end
    j = k + 2
  end
end

local function skip(s, i)
  return string.find(s, '[^ \t\r\n]', i)
end

local function val_end(s, i)
  local ch = string.sub(s, i, i)
  if ch == '"' then return str_end(s, i) end
  if ch == '{' or ch == '[' then
    local depth, j = 0, i
    while true do
      local k = string.find(s, '["{}%[%]]', j)
      if not k then return error('unbalanced JSON') end
      local c = string.sub(s, k, k)
      if c == '"' then
        k = str_end(s, k)
      elseif c == '{' or c == '[' then
        depth = depth + 1
      else
        depth = depth - 1
        if depth == 0 then return k end
      end
      j = k + 1
    end
  end
  local k = string.find(s, '[,}%] \t\r\n]', i)
  if not k then return #s end
  return k - 1
end

-- The members of object text `s`: keys (texts, quotes included) in order, key -> value text.
local function members(s)
  local keys, vals = {}, {}
  local i = skip(s, skip(s, 1) + 1)
  if string.sub(s, i, i) == '}' then return keys, vals end
  while true do
    local ke = str_end(s, i)
    local key = string.sub(s, i, ke)
    local vi = skip(s, skip(s, ke + 1) + 1)
    local ve = val_end(s, vi)
    if vals[key] == nil then keys[#keys + 1] = key end
    vals[key] = string.sub(s, vi, ve)
    i = skip(s, ve + 1)
    if string.sub(s, i, i) == '}' then return keys, vals end
    i = skip(s, i + 1)
  end
end

local function is_object(v)
  return v ~= nil and string.sub(v, skip(v, 1), skip(v, 1)) == '{'
end

local function compose(keys, vals)
  local out = {}
  for _, k in ipairs(keys) do
    if vals[k] ~= nil then out[#out + 1] = k .. ':' .. vals[k] end
  end
  return '{' .. table.concat(out, ',') .. '}'
end

-- RFC 7396: an object patch merges member by member (null deletes), anything else replaces.
local function merge(target, patch)
  if not is_object(patch) then return patch end
  if not is_object(target) then target = '{}' end
  local keys, vals = members(target)
  local pkeys, pvals = members(patch)
  for _, k in ipairs(pkeys) do
    local v = pvals[k]
    if v == 'null' then
      vals[k] = nil
    else
      if vals[k] == nil then keys[#keys + 1] = k end
      vals[k] = merge(vals[k], v)
    end
  end
  return compose(keys, vals)
end

local function shallow(target, addition)
  local keys, vals = members(target)
  local akeys, avals = members(addition)
  for _, k in ipairs(akeys) do
    if vals[k] == nil then keys[#keys + 1] = k end
    vals[k] = avals[k]
  end
  return compose(keys, vals)
end

-- A decimal string plus one, exactly (all 64 bits of a version count).
local function incr(s)
  local tail = ''
  for i = #s, 1, -1 do
    local d = string.byte(s, i) - 48
    if d < 9 then return string.sub(s, 1, i - 1) .. (d + 1) .. tail end
    tail = '0' .. tail
  end
  return '1' .. tail
end

local k = KEYS[1]
local d = redis.call('HMGET', k, 'idle_expires_at', 'absolute_expires_at', 'version',
  'idle_ttl_ms', 'data')
local idle, abs = tonumber(d[1]), tonumber(d[2])
if not (idle and abs and d[3] and d[5]) then return {'0'} end
local now = tonumber(ARGV[1])
if now >= math.min(idle, abs) then return {'0'} end
if ARGV[4] ~= '' and d[3] ~= ARGV[4] then return {'1', d[3]} end
local data
if ARGV[2] == 'replace' then
  data = ARGV[3]
elseif ARGV[2] == 'merge' then
  data = merge(d[5], ARGV[3])
else
  data = shallow(d[5], ARGV[3])
end
if #data > tonumber(ARGV[5]) then return {'3', tostring(#data)} end
local new_idle = d[1]
local slid = now + (tonumber(d[4]) or 0)
if slid > idle then new_idle = string.format('%.0f', slid) end
redis.call('HSET', k, 'data', data, 'updated_at', ARGV[1], 'last_seen_at', ARGV[1],
  'idle_expires_at', new_idle, 'version', incr(d[3]))
if tonumber(new_idle) < abs then expire_at(k, new_idle) else expire_at(k, d[2]) end
local out = {'2', ''}
for _, v in ipairs(redis.call('HGETALL', k)) do out[#out + 1] = v end
return out
"#;

impl RedisEngine {
    /// [`sessiond_store::SessionStore::update_session_data`] as one script.
    pub(crate) async fn update_data(
        &self,
        id: &str,
        change: &DataChange,
        if_match: Option<u64>,
        now: Millis,
        max_data_bytes: usize,
    ) -> Result<DataUpdate> {
        let (mode, text) = match change {
            DataChange::Replace(t) => ("replace", t),
            DataChange::MergePatch(t) => ("merge", t),
            DataChange::Shallow(t) => ("shallow", t),
        };
        let mut inv = self.scripts.session_update.key(self.keys.session(id));
        inv.arg(now)
            .arg(mode)
            .arg(text.as_str())
            .arg(if_match.map(|v| v.to_string()).unwrap_or_default())
            .arg(max_data_bytes);
        let reply: Vec<Vec<u8>> = self.eval("session_update", &inv).await?;
        let mut parts = reply.into_iter();
        let code = parts.next().unwrap_or_default();
        let extra = parts.next().unwrap_or_default();
        match code.as_slice() {
            b"2" => {}
            b"1" => {
                return Ok(DataUpdate::VersionMismatch {
                    current: crate::parse_num("version", &extra)?,
                })
            }
            b"3" => {
                return Ok(DataUpdate::TooLarge {
                    bytes: crate::parse_num("data length", &extra)?,
                })
            }
            _ => return Ok(DataUpdate::Missing),
        }
        let mut hash = HashMap::new();
        while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            let name = String::from_utf8(name)
                .map_err(|_| StoreError::Corrupt("session field name is not UTF-8".into()))?;
            hash.insert(name, value);
        }
        match crate::sessions::decode(id, hash)? {
            Some(record) => Ok(DataUpdate::Written(record)),
            None => Err(StoreError::Corrupt(format!(
                "session {id}: the update script returned no record"
            ))),
        }
    }
}
