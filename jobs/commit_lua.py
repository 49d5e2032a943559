"""The commit of a stay record as one Lua script, and the index keys it writes.

Split from `jobs/state.py` (StayStore.commit runs it); import the key functions from either.
"""

from __future__ import annotations


def code_index_key(prefix: str, access_code_id: str) -> str:
    """Which stay holds a Seam access code: its booking id."""
    return f"{prefix}:code:{access_code_id}"


def device_index_key(prefix: str, device_id: str) -> str:
    """The stays of one lock that are not final: a set of booking ids."""
    return f"{prefix}:device:{device_id}"


# KEYS: record, index, results, the lock's stays (a set: the booking id is added while not
# final, removed once final), and the code's index key when the record holds an access_code_id
# (set to the booking id, with the record's expiry). ARGV: expected seq, record JSON, EXAT ('' for
# none), booking id, index score ('' when final: leave the index), the record's revision ('' for
# none), then for an outcome the stream's MAXLEN and its field/value pairs. Returns 1 written,
# 0 the record is gone or at another seq, -1 it is not JSON, 2 the stored revision is newer
# than the one written (the caller takes it over and retries). cjson reads numbers as doubles:
# exact up to 2^53, which `payload.MAX_REVISION` keeps revisions within.
COMMIT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, doc = pcall(cjson.decode, raw)
if not ok or type(doc) ~= 'table' then return -1 end
if tonumber(doc['seq']) ~= tonumber(ARGV[1]) then return 0 end
local stored, mine = tonumber(doc['revision']), tonumber(ARGV[6])
if stored and (not mine or stored > mine) then return 2 end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[3])
end
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('SREM', KEYS[4], ARGV[4])
else
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
  redis.call('SADD', KEYS[4], ARGV[4])
end
if KEYS[5] then
  if ARGV[3] == '' then
    redis.call('SET', KEYS[5], ARGV[4])
  else
    redis.call('SET', KEYS[5], ARGV[4], 'EXAT', ARGV[3])
  end
end
if #ARGV > 7 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', unpack(ARGV, 8))
end
return 1
"""
