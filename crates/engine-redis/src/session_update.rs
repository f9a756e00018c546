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
//!
//! The change's outbox event (`sessiond_store::DataEvent`) is written by the same script, so
//! that security events cost no read either: the script fills in the keys the change altered
//! (by JSON value, so an object merged to what it was, or written with its members in another
//! order, is no change), the version it wrote and the stored owner and origin.

use std::collections::HashMap;

use sessiond_store::{
    DataChange, DataEvent, DataUpdate, DataWrite, Deletion, EventPart, Millis, Result,
    SessionRecord, StoreError,
};

use crate::RedisEngine;

/// The JSON-text helpers of the scripts that fill in a [`DataEvent`] (this update and the
/// checked delete): member splitting, RFC 7396 merge, top-level merge, value equality, the
/// changed keys, and `render`, which fills the holes of the event parts in `ARGV[first..]`.
pub const JSON_TEXT: &str = r#"
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

-- The elements of array text `s`, in order.
local function elements(s)
  local out = {}
  local i = skip(s, skip(s, 1) + 1)
  if string.sub(s, i, i) == ']' then return out end
  while true do
    local e = val_end(s, i)
    out[#out + 1] = string.sub(s, i, e)
    i = skip(s, e + 1)
    if string.sub(s, i, i) == ']' then return out end
    i = skip(s, i + 1)
  end
end

-- Whether two value texts are the same JSON value. Every text was written by serde_json, so
-- scalars are equal exactly when their texts are; objects are equal in any member order.
local function same(a, b)
  if a == b then return true end
  local ca, cb = string.sub(a, skip(a, 1), skip(a, 1)), string.sub(b, skip(b, 1), skip(b, 1))
  if ca ~= cb then return false end
  if ca == '{' then
    local ka, va = members(a)
    local kb, vb = members(b)
    if #ka ~= #kb then return false end
    for _, key in ipairs(ka) do
      if vb[key] == nil or not same(va[key], vb[key]) then return false end
    end
    return true
  end
  if ca == '[' then
    local ea, eb = elements(a), elements(b)
    if #ea ~= #eb then return false end
    for n = 1, #ea do
      if not same(ea[n], eb[n]) then return false end
    end
    return true
  end
  return false
end

-- Byte order (string `<` follows the server's collation locale).
local function bytes_less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The top-level keys whose values differ between object texts `old` and `new`, as a JSON
-- array sorted by the keys' bytes (`sessiond_store::changed_keys`).
local function changed(old, new)
  local okeys, ovals = members(old)
  local nkeys, nvals = members(new)
  local found, seen = {}, {}
  for _, list in ipairs({okeys, nkeys}) do
    for _, key in ipairs(list) do
      if not seen[key] then
        seen[key] = true
        local a, b = ovals[key], nvals[key]
        if a == nil or b == nil or not same(a, b) then
          found[#found + 1] = {cjson.decode(key), key}
        end
      end
    end
  end
  table.sort(found, function(x, y) return bytes_less(x[1], y[1]) end)
  local texts = {}
  for n, pair in ipairs(found) do texts[n] = pair[2] end
  return '[' .. table.concat(texts, ',') .. ']'
end

-- The event of ARGV[first..] with its holes filled, or nil without one.
local function render(first, old, new, version, user, origin)
  if #ARGV < first then return nil end
  local out = {}
  for n = first, #ARGV do
    local p = ARGV[n]
    local tag = string.sub(p, 1, 1)
    if tag == 't' then
      out[#out + 1] = string.sub(p, 2)
    elseif tag == 'c' then
      out[#out + 1] = changed(old, new)
    elseif tag == 'v' then
      out[#out + 1] = version
    elseif tag == 'u' then
      out[#out + 1] = user and cjson.encode(user) or 'null'
    elseif tag == 'o' then
      out[#out + 1] = cjson.encode(origin or 'service')
    else
      return error('unknown event part')
    end
  end
  return table.concat(out)
end

"#;

/// The update itself (merging with the helpers of [`JSON_TEXT`]) and, when the caller passed
/// an event template, the event (see `scripts::OUTBOX`).
/// KEYS: session hash, outbox stream, outbox index (on a standalone server only).
/// ARGV: now, mode (`replace`, `merge`, `shallow`), change (JSON object text), expected
/// version or '', max data bytes, then the event's parts: `t<text>`, or one letter for a hole
/// (`c` changed keys, `v` version, `u` user id, `o` origin); none for no event.
/// Returns {'0'} missing, {'1', stored version} version mismatch, {'3', data length} too
/// large, {'2', index, field, value, ...} written, with every field of the hash as it now is;
/// index is '1' when the caller must name the outbox in the index.
/// Compiled behind [`JSON_TEXT`], the native-TTL helper `expire_at` (`scripts::EXPIRE_AT`)
/// and the outbox helper `outbox` (`scripts::OUTBOX`).
pub const SESSION_UPDATE: &str = r#"
local k = KEYS[1]
local d = redis.call('HMGET', k, 'idle_expires_at', 'absolute_expires_at', 'version',
  'idle_ttl_ms', 'data', 'user_id', 'origin')
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
local version = incr(d[3])
redis.call('HSET', k, 'data', data, 'updated_at', ARGV[1], 'last_seen_at', ARGV[1],
  'idle_expires_at', new_idle, 'version', version)
if tonumber(new_idle) < abs then expire_at(k, new_idle) else expire_at(k, d[2]) end
local index = ''
local event = render(6, d[5], data, version, d[6], d[7])
if event then index = outbox(event, KEYS[2], KEYS[3]) end
local out = {'2', index}
for _, v in ipairs(redis.call('HGETALL', k)) do out[#out + 1] = v end
return out
"#;

/// Deletes a live session at the expected version and queues its event, filled in from the
/// record deleted (`SessionStore::delete_session_checked`). Compiled like [`SESSION_UPDATE`].
/// KEYS: session hash, outbox stream, outbox index (on a standalone server only).
/// ARGV: now, expected version or '', then the event's parts (as for the update).
/// Returns {'0'} missing (an expired hash is deleted, without event), {'1', stored version}
/// version mismatch, {'2', index, field, value, ...} deleted, with every field it had.
pub const SESSION_DELETE_CHECKED: &str = r#"
local k = KEYS[1]
local d = redis.call('HMGET', k, 'idle_expires_at', 'absolute_expires_at', 'version', 'data',
  'user_id', 'origin')
local idle, abs = tonumber(d[1]), tonumber(d[2])
if not (idle and abs and d[3] and d[4]) or tonumber(ARGV[1]) >= math.min(idle, abs) then
  redis.call('DEL', k)
  return {'0'}
end
if ARGV[2] ~= '' and d[3] ~= ARGV[2] then return {'1', d[3]} end
local fields = redis.call('HGETALL', k)
redis.call('DEL', k)
local index = ''
local event = render(3, d[4], d[4], d[3], d[5], d[6])
if event then index = outbox(event, KEYS[2], KEYS[3]) end
local out = {'2', index}
for _, v in ipairs(fields) do out[#out + 1] = v end
return out
"#;

/// The event parts of `event` as script arguments (`t<text>` or a hole's letter).
fn event_args(inv: &mut redis::ScriptInvocation<'_>, event: Option<&DataEvent>) {
    for part in event.map(|e| e.0.as_slice()).unwrap_or_default() {
        inv.arg(match part {
            EventPart::Text(text) => [&b"t"[..], text].concat(),
            EventPart::ChangedKeys => b"c".to_vec(),
            EventPart::Version => b"v".to_vec(),
            EventPart::UserId => b"u".to_vec(),
            EventPart::Origin => b"o".to_vec(),
        });
    }
}

/// A script reply `{code, extra, field, value, ...}`: its code, its extra, the rest.
fn split_reply(reply: Vec<Vec<u8>>) -> (Vec<u8>, Vec<u8>, std::vec::IntoIter<Vec<u8>>) {
    let mut parts = reply.into_iter();
    let code = parts.next().unwrap_or_default();
    let extra = parts.next().unwrap_or_default();
    (code, extra, parts)
}

/// A script's reply of fields and values as the session record it describes.
fn record_of(id: &str, parts: impl Iterator<Item = Vec<u8>>) -> Result<Option<SessionRecord>> {
    let mut hash = HashMap::new();
    let mut parts = parts;
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        let name = String::from_utf8(name)
            .map_err(|_| StoreError::Corrupt("session field name is not UTF-8".into()))?;
        hash.insert(name, value);
    }
    crate::sessions::decode(id, hash)
}

impl RedisEngine {
    /// [`sessiond_store::SessionStore::delete_session_checked`] as one script. The user's
    /// index keeps the member (its key is not known before the script): listing and the index
    /// sweep drop members whose hash is gone, as after a crash between two calls.
    pub(crate) async fn delete_checked(
        &self,
        id: &str,
        if_match: Option<u64>,
        now: Millis,
        event: Option<&DataEvent>,
    ) -> Result<Deletion> {
        let outbox = self.keys.outbox_of_session(id);
        let mut inv = self
            .scripts
            .session_delete_checked
            .key(self.keys.session(id));
        inv.key(&outbox);
        if !self.is_cluster() {
            inv.key(self.keys.outbox_index());
        }
        inv.arg(now)
            .arg(if_match.map(|v| v.to_string()).unwrap_or_default());
        event_args(&mut inv, event);
        let (code, extra, parts) = split_reply(self.eval("session_delete", &inv).await?);
        match code.as_slice() {
            b"2" => {}
            b"1" => {
                return Ok(Deletion::VersionMismatch {
                    current: crate::parse_num("version", &extra)?,
                })
            }
            _ => return Ok(Deletion::Missing),
        }
        let record = record_of(id, parts)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "session {id}: the delete script returned no record"
            ))
        })?;
        if extra == b"1" {
            // A follow-up is sent anyway (Redis Cluster): it drops the index member too.
            let mut follow = redis::pipe();
            follow
                .cmd("SADD")
                .arg(self.keys.outbox_index())
                .arg(&outbox);
            if let Some(user) = &record.user_id {
                follow
                    .cmd("ZREM")
                    .arg(self.keys.user_sessions(user))
                    .arg(id);
            }
            self.query_pipe::<redis::Value>("session_unindex", &follow)
                .await?;
        }
        Ok(Deletion::Deleted(record))
    }

    /// [`sessiond_store::SessionStore::update_session_data`] as one script.
    pub(crate) async fn update_data(&self, w: DataWrite<'_>) -> Result<DataUpdate> {
        let id = w.id;
        let (mode, text) = match w.change {
            DataChange::Replace(t) => ("replace", t),
            DataChange::MergePatch(t) => ("merge", t),
            DataChange::Shallow(t) => ("shallow", t),
        };
        let outbox = self.keys.outbox_of_session(id);
        let mut inv = self.scripts.session_update.key(self.keys.session(id));
        inv.key(&outbox);
        if !self.is_cluster() {
            inv.key(self.keys.outbox_index());
        }
        inv.arg(w.now)
            .arg(mode)
            .arg(text.as_str())
            .arg(w.if_match.map(|v| v.to_string()).unwrap_or_default())
            .arg(w.max_data_bytes);
        event_args(&mut inv, w.event);
        let (code, extra, parts) = split_reply(self.eval("session_update", &inv).await?);
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
        if extra == b"1" {
            self.index_outbox(&outbox).await?;
        }
        match record_of(id, parts)? {
            Some(record) => Ok(DataUpdate::Written(record)),
            None => Err(StoreError::Corrupt(format!(
                "session {id}: the update script returned no record"
            ))),
        }
    }
}
