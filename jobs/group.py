"""A stay with several locks (`device_ids`): one PIN on every door, one outcome.

Records: the booking's own record runs the first lock, as a stay of one lock does; each further
lock has a record of its own, `part_id(booking_id, device_id)` (`part: true`): a stay of that
one lock, run by the same steps. Every guarantee of a one-lock stay (one code per lock under
crashes and re-runs, the lock's own rate limits, transitions logged once, the guard) holds for
each lock.

- **One PIN:** a part asks Seam for no PIN first: it waits for the first lock's (chosen when
  its generate_code answers, before its create) and creates its code with it. A lock that
  refuses it (409: the PIN is on that lock already; `code_constraints_violated`) gets a PIN of
  its own, and so does a part whose first lock failed without one.
- **One outcome:** the records write no results entries of their own. After each commit the
  group's outcome is worked out from all its records and written when it changed
  (`{prefix}:reported:{booking_id}` holds the last one; checked against each record's seq, so
  two locks committing at once cannot write a stale outcome). A commit marks the booking in
  `{prefix}:regroup` first; the reconciler reports what a crash left unreported.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from typing import Any

from jobs.records import Phase
from jobs.state import StayState, StayStore, part_id
from jobs.step import Step

REGROUP = "regroup"
_ORDER = [Phase.QUEUED, Phase.PROVISIONING, Phase.WAITING]
Records = list[tuple[str, StayState | None]]  # (device_id, its record) in the stay's order


async def shared_pin(step: Step) -> str | None:
    """The PIN a part puts on its lock: the first lock's; "" for one of its own (the first lock
    failed or is gone without one); None while the first lock has none yet."""
    s = step.state
    first = await step.deps.store.get(s.stay.booking_id)
    if first is None or first.done or s.stay.device_id not in first.stay.locks:
        return ""
    if first.code is None:
        step.later(max(0.2, min(step.deps.settings.poll_initial, 2.0)))
        return None
    return first.code


async def read_group(store: StayStore, booking_id: str) -> tuple[StayState | None, Records]:
    """The booking's record and, lock by lock, every record of its stay (None: not yet)."""
    first = await store.get(booking_id)
    if first is None:
        return None, []
    records: Records = [(first.stay.device_id, first)]
    for lock in first.stay.locks[1:]:
        records.append((lock, await store.get(part_id(booking_id, lock))))
    return first, records


def outcome(first: StayState, records: Records, reported: str | None) -> tuple[str, Phase] | None:
    """The group's outcome to report: (key, state), or None when there is nothing to tell."""
    seen = [r for _, r in records if r is not None]
    failed = [(lock, r) for lock, r in records if r is not None and r.state is Phase.FAILED]
    if failed:
        lock, r = failed[0]
        return f"failed:{lock}:{r.failure.reason if r.failure else ''}", Phase.FAILED
    if len(seen) < len(records):
        return None
    if all(r.state is Phase.CANCELLED for r in seen):
        return "cancelled", Phase.CANCELLED
    if all(r.state is Phase.SCHEDULED for r in seen):
        pins = ",".join(f"{r.access_code_id}:{_digest(r.code)}" for r in seen)
        return f"scheduled:{pins}", Phase.SCHEDULED
    if (reported or "").startswith("scheduled:"):
        return Phase.WAITING.value, Phase.WAITING
    return None


def group_state(records: Records) -> Phase:
    """The stay's state: failed if a lock failed, scheduled or cancelled once all are, else
    the least advanced lock's."""
    seen = [r.state if r is not None else Phase.QUEUED for _, r in records]
    for final in (Phase.FAILED,):
        if final in seen:
            return final
    for every in (Phase.SCHEDULED, Phase.CANCELLED):
        if all(p is every for p in seen):
            return every
    return min((p for p in seen if p in _ORDER), key=_ORDER.index, default=Phase.WAITING)


def result_fields(first: StayState, records: Records, state: Phase) -> dict[str, Any]:
    """The group's results entry: the first lock's fields, the stay's state, one `code` when
    every lock has the same PIN, else `codes` (lock -> PIN), and the failing lock named."""
    entry: dict[str, Any] = {
        "booking_id": first.stay.booking_id,
        "device_id": first.stay.device_id,
        "device_ids": ",".join(first.stay.locks),
        "state": state.value,
        "access_code_id": first.access_code_id or "",
        "at": max(r.updated_at for _, r in records if r is not None).isoformat(),
        "action": first.action,
    }
    if first.revision is not None:
        entry["revision"] = first.revision
    if first.stay.starts_at and first.stay.ends_at:
        entry["starts_at"] = first.stay.starts_at.isoformat()
        entry["ends_at"] = first.stay.ends_at.isoformat()
    if state is Phase.SCHEDULED:
        pins = {lock: r.code for lock, r in records if r is not None and r.code}
        if len(set(pins.values())) == 1:
            entry["code"] = next(iter(pins.values()))
        else:
            entry["codes"] = json.dumps(pins, separators=(",", ":"))
    backups = [lock for lock, r in records if r is not None and r.backup]
    if backups:
        entry["backup"] = "true"
        entry["backup_device_ids"] = ",".join(backups)
    for lock, r in records:
        if r is not None and r.state is Phase.FAILED and r.failure:
            entry["failure_reason"] = r.failure.reason
            entry["failure_message"] = f"lock {lock}: {r.failure.message}"
            break
    for kind in ("errors", "warnings"):
        found = sorted({c for _, r in records if r is not None for c in getattr(r, kind)})
        if found:
            entry[kind] = ",".join(found)
    return entry | _why(first, records)


def _why(first: StayState, records: Records) -> dict[str, Any]:
    """Why the stay is told again (a guarded lock broke, was replaced...), a moved first lock."""
    why: dict[str, Any] = {}
    reasons = sorted({r.guard_reason for _, r in records
                      if r is not None and r.scheduled_at is not None and r.guard_reason})
    if reasons:
        why["reason"] = ",".join(reasons)
    if first.previous is not None:
        why["previous_device_id"] = first.previous.device_id
        why["previous_access_code_id"] = first.previous.access_code_id or ""
    return why


def lock_view(lock: str, r: StayState | None) -> dict[str, Any]:
    """One lock in `status --json`'s `locks`."""
    if r is None:
        return {"device_id": lock, "access_code_id": None, "state": Phase.QUEUED.value,
                "errors": [], "warnings": [], "backup": False}
    return {"device_id": lock, "access_code_id": r.access_code_id, "state": r.state.value,
            "errors": sorted(r.errors), "warnings": sorted(r.warnings), "backup": r.backup}


def group_public(first: StayState, records: Records, now: datetime) -> dict[str, Any]:
    """`status --json` for a stay of several locks: the first lock's fields, the stay's state,
    errors and warnings of every lock, the failing lock's failure, and `locks`."""
    view = first.public(now)
    view["state"] = group_state(records).value
    view["errors"] = sorted({e for _, r in records if r is not None for e in r.errors})
    view["warnings"] = sorted({w for _, r in records if r is not None for w in r.warnings})
    for lock, r in records:
        if r is not None and r.state is Phase.FAILED and r.failure:
            view["failure"] = {"reason": r.failure.reason,
                               "message": f"lock {lock}: {r.failure.message}"}
            break
    view["locks"] = [lock_view(lock, r) for lock, r in records]
    seen = [r for _, r in records if r is not None]
    view["updated_at"] = max(r.updated_at for r in seen).isoformat()
    view["backup"] = any(r.backup for r in seen)
    if any(r.cancel_requested and not r.state.is_final for r in seen):
        view["pending_action"] = "cancel"
    return view


# KEYS: the group's reported key, the results stream, the regroup set, then every record of
# the group (those read). ARGV: the outcome's key ('' none), MAXLEN, the booking id, the EXAT of
# the reported key ('' none), the records' seqs as read ('' for a missing one), then the entry's
# field/value pairs. Returns -1 a record moved meanwhile (read again), 0 nothing new, 1 written.
_REPORT = """
local n = #KEYS - 3
for i = 1, n do
  local raw = redis.call('GET', KEYS[3 + i])
  local seq = ''
  if raw then
    local ok, doc = pcall(cjson.decode, raw)
    if ok and type(doc) == 'table' then seq = tostring(doc['seq']) end
  end
  if seq ~= ARGV[4 + i] then return -1 end
end
redis.call('ZREM', KEYS[3], ARGV[3])
if ARGV[1] == '' or redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[4])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 5 + n))
return 1
"""


def reported_key(prefix: str, booking_id: str) -> str:
    return f"{prefix}:reported:{booking_id}"


async def mark(store: StayStore, booking_id: str) -> None:
    """Before a grouped record's commit: its group's outcome is to be worked out again."""
    await store.redis.zadd(f"{store.prefix}:{REGROUP}", {booking_id: time.time()})


async def report(store: StayStore, booking_id: str, maxlen: int = 100_000) -> bool:
    """Write the group's outcome if it changed since the last one written; True if it did."""
    for _ in range(10):  # a record moved while read: read again
        first, records = await read_group(store, booking_id)
        if first is None or not first.grouped:  # gone, or one lock again: it reports itself
            await store.redis.zrem(f"{store.prefix}:{REGROUP}", booking_id)
            return False
        rkey = reported_key(store.prefix, booking_id)
        raw = await store.redis.get(rkey)
        found = outcome(first, records, raw.decode() if isinstance(raw, bytes) else raw)
        ids = [_record_id(booking_id, i, lock) for i, (lock, _) in enumerate(records)]
        keys = [rkey, store.results_key, f"{store.prefix}:{REGROUP}", *map(store.key, ids)]
        expiry = first.stay.ends_at
        args: list[Any] = [found[0] if found else "", maxlen, booking_id,
                           int(expiry.timestamp()) + 30 * 86400 if expiry else "",
                           *(str(r.seq) if r is not None else "" for _, r in records)]
        if found:
            for name, value in result_fields(first, records, found[1]).items():
                args += [name, value]
        done = await store.redis.register_script(_REPORT)(keys=keys, args=args)
        if done != -1:
            return bool(done == 1)
    return False


def _record_id(booking_id: str, index: int, lock: str) -> str:
    return booking_id if index == 0 else part_id(booking_id, lock)


def _digest(pin: str | None) -> str:
    return hashlib.sha256((pin or "").encode()).hexdigest()[:12]
