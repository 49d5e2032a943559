"""The Lua scripts of the event path (jobs/events.py): one call per event."""

from __future__ import annotations

# An event routed nowhere, in one call (a receiver killed between a record and its count would
# leave the resend counted a duplicate). KEYS: de-dup key, counts. ARGV: TTL s, summary, the
# counter of a fresh one. Returns 1 fresh, 0 a duplicate.
IGNORE = """
redis.call('HINCRBY', KEYS[2], 'received', 1)
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  return 1
end
redis.call('HINCRBY', KEYS[2], 'duplicate', 1)
return 0
"""


# One call per event. KEYS: the event's de-dup key, the counts hash, the index to look in (the
# code's booking id, or the lock's set of stays), arq's queue. ARGV: de-dup TTL s, the summary
# to keep, the key prefix, now in ms (arq's scores), 'code' or 'device', the access code or
# device id, arq's in-progress key prefix, the signal the event gives ('scheduled' or 'other'),
# its occurred_at in ms since 1970 ('' unknown). Returns {0} a duplicate (nothing else done), {1} no
# stay of ours holds it, or {2, booking ids woken, booking ids concerned}. Stay records, job ids
# and wake marks are named from the index's booking ids (not declared in KEYS: fine on one Redis
# or Sentinel, not on a Cluster).
# A stay is woken only if its next job `<prefix>:<booking_id>:<seq>` is queued with a later
# score: moved to now, never added (a stay that is final or already due is left). A stay whose
# step is running, or has committed and not yet queued its next job, gets a wake mark
# `<prefix>:wake:<booking_id>` instead, which that step's unlock reads (jobs/pipeline.py).
# Each stay woken or marked also gets the signal `<prefix>:signal:<booking_id>`, which its next
# step reads once: '<kind>|<ms>', kind 'scheduled' while every event since says the current code
# is on the lock and 'other' as soon as one says anything else, ms the newest occurred_at (ms
# since 1970) of them (jobs/guard.py).
TAKE = """
redis.call('HINCRBY', KEYS[2], 'received', 1)
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[2], 'duplicate', 1)
  return {0}
end
local ids
if ARGV[5] == 'code' then
  local id = redis.call('GET', KEYS[3])
  ids = id and {id} or {}
else
  ids = redis.call('SMEMBERS', KEYS[3])
end
local function holds(doc)
  local field, current = 'device_id', doc['stay']['device_id']
  if ARGV[5] == 'code' then field, current = 'access_code_id', doc['access_code_id'] end
  if current == ARGV[6] then return true, ARGV[5] == 'code' end
  if type(doc['to_delete']) == 'table' then
    for _, ref in ipairs(doc['to_delete']) do
      if type(ref) == 'table' and ref[field] == ARGV[6] then return true, false end
    end
  end
  return false, false
end
local function signal(id, about_current)
  local key = ARGV[3] .. ':signal:' .. id
  local at = tonumber(ARGV[9]) or 1e15  -- no occurred_at: as new as can be
  local kind, was_at = 'other', nil
  local old = redis.call('GET', key)
  local was_kind = nil
  if old then was_kind, was_at = string.match(old, '^(%a+)|(%d+)$') end
  if about_current and ARGV[8] == 'scheduled' and was_kind ~= 'other' then kind = 'scheduled' end
  if was_at and tonumber(was_at) > at then at = tonumber(was_at) end
  redis.call('SET', key, kind .. '|' .. string.format('%d', at), 'EX', 3600)
end
local woken, seen = {}, {}
for _, id in ipairs(ids) do
  local raw = redis.call('GET', ARGV[3] .. ':stay:' .. id)
  local ok, doc = false, nil
  if raw then ok, doc = pcall(cjson.decode, raw) end
  local held, about_current = false, false
  if ok and type(doc) == 'table' and type(doc['stay']) == 'table' then
    held, about_current = holds(doc)
  end
  if held then
    seen[#seen + 1] = id
    local phase = doc['state']
    if phase == 'failed' or phase == 'cancelled' or doc['over'] == true then
      redis.call('HINCRBY', KEYS[2], 'stays_final', 1)
    else
      signal(id, about_current)
      local job = ARGV[3] .. ':' .. id .. ':' .. tostring(doc['seq'])
      local score = redis.call('ZSCORE', KEYS[4], job)
      if not score or redis.call('EXISTS', ARGV[7] .. job) == 1 then
        -- A step is running (or between its commit and its next job): it may have read the
        -- code before this event. Its unlock moves the next job to now (jobs/pipeline.py).
        redis.call('SET', ARGV[3] .. ':wake:' .. id, '1', 'EX', 3600)
        redis.call('HINCRBY', KEYS[2], 'stays_marked', 1)
      elseif tonumber(score) <= tonumber(ARGV[4]) then
        redis.call('HINCRBY', KEYS[2], 'stays_due', 1)
      else
        redis.call('ZADD', KEYS[4], 'XX', ARGV[4], job)
        redis.call('HINCRBY', KEYS[2], 'stays_woken', 1)
        woken[#woken + 1] = id
      end
    end
  elseif ARGV[5] == 'device' then
    redis.call('SREM', KEYS[3], id)
  end
end
if #seen == 0 then
  -- Not kept as seen: it may have come before the commit that indexes its code, and its
  -- resend or the feed's re-read must find the stay then.
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'ignored_unmanaged', 1)
  return {1}
end
redis.call('HINCRBY', KEYS[2], 'taken', 1)
return {2, woken, seen}
"""
