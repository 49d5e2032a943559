"""One step of a stay: read its state, call Seam, write its state, decide the next check.

A stay advances through a chain of short arq jobs `codeprov:{booking_id}:{seq}`; the state
record holds the seq of the step that should run next. A step that finds another seq is stale
(a re-run after a crash, a duplicate, or a change enqueued meanwhile): it only makes sure the
expected step is queued. While the lock is programmed no job runs: the next check is deferred.
Steps of one stay never overlap: each holds a short per-stay lock in Redis, so a cancel can
never race a create in flight on another worker.
"""

from __future__ import annotations

from datetime import UTC, datetime

from jobs.backup import consider as consider_backup
from jobs.backup import drop_on_change
from jobs.changes import apply_update, cancel, follow_move, process_deletions
from jobs.events import flowing_key, signal_key
from jobs.guard import MAX_REPROVISIONS, provision_again
from jobs.observe import check_at_risk, check_deadline, observe, scheduled_by_event
from jobs.provision import provision
from jobs.state import booking_of
from jobs.step import JobInfo, Step, until
from jobs.workspace import down_key, report_down, report_up
from worker.deps import Deps
from worker.errors import (
    CodeprovError,
    RateLimitWait,
    SeamClientError,
    SeamError,
    SeamNotFound,
    SeamRateLimited,
    SeamTransientError,
    SeamWorkspaceError,
)
from worker.limiter import backoff
from worker.logs import get_logger
from worker.queue import enqueue_step, job_id

__all__ = ["JobInfo", "StayBusy", "advance_stay"]

# One call to start a step. KEYS: the stay's record, its lock, the latency hash, the workspace
# outage key, the events-flowing key, the stay's event signal. ARGV: seq, job id, lock TTL ms.
# Returns {_ORPHANED} (no record), {_STALE, record} (another seq, or done: no lock taken),
# {_BUSY} (another step holds the lock), or {_LOCKED, record, the lock's learned time, the
# workspace's, 1 if the workspace is down else 0, 1 if events flow else 0, the signal ('' for
# none; read once: it is deleted)} with the lock taken. A record that is not JSON comes back as
# stale, for the caller's parser to name what is wrong with it. The lock is this job's if it
# already holds its id: redis-py resends a script after a timeout, and the first run may have
# taken it.
_ORPHANED, _STALE, _BUSY, _LOCKED = 0, 1, 2, 3
_BEGIN = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {0} end
local ok, doc = pcall(cjson.decode, raw)
if not ok or type(doc) ~= 'table' or type(doc['stay']) ~= 'table' then return {1, raw} end
local phase = doc['state']
if tonumber(doc['seq']) ~= tonumber(ARGV[1]) or phase == 'failed' or phase == 'cancelled'
    or doc['over'] == true then
  return {1, raw}
end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3])
    and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {2}
end
local learned = redis.call('HMGET', KEYS[3], tostring(doc['stay']['device_id']), '*')
local signal = redis.call('GET', KEYS[6])
if signal then redis.call('DEL', KEYS[6]) end
return {3, raw, learned[1], learned[2], redis.call('EXISTS', KEYS[4]),
        redis.call('EXISTS', KEYS[5]), signal or ''}
"""

# The end of a step. KEYS: the stay's lock, its wake mark, arq's queue. ARGV: this job's id,
# the stay's next job id ('' if the step queued none), now in ms (arq's scores). Frees the lock
# if this job holds it. An event that came while the step ran left the wake mark
# (jobs/events.py): the step may have read the code before it, so its next job moves to now.
# Returns 1 if it did, else 0.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2])  -- superseded or done: the mark must not pull a later look ahead
  return 0
end
if redis.call('DEL', KEYS[2]) == 0 then return 0 end
local score = redis.call('ZSCORE', KEYS[3], ARGV[2])
if score and tonumber(score) > tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[3], 'XX', ARGV[3], ARGV[2])
  return 1
end
return 0
"""


class StayBusy(CodeprovError):
    """Another step of this stay is running: try again shortly."""

    retryable = True


async def advance_stay(deps: Deps, booking_id: str, seq: int, job: JobInfo) -> None:
    log = get_logger(booking_id=booking_of(booking_id), job_id=job.job_id, job_try=job.job_try)
    lock = f"{deps.settings.key_prefix}:lock:{booking_id}"
    prefix = deps.settings.key_prefix
    keys = [deps.store.key(booking_id), lock, deps.latency.key, down_key(prefix),
            flowing_key(prefix), signal_key(prefix, booking_id)]
    ttl_ms = int(deps.settings.job_timeout * 1000)
    begun = await deps.redis.register_script(_BEGIN)(keys=keys, args=[seq, job.job_id, ttl_ms])
    next_job: str | None = None
    outcome, raw, own, workspace, down, flowing, signal = [*begun, *[None] * 6][:7]
    if outcome == _ORPHANED:
        log.warning("job.orphaned", message="no state record for this booking; job dropped")
        return
    if outcome == _BUSY:
        raise StayBusy(f"another step of {booking_id} is running")
    try:
        state = deps.store.load(raw, booking_id)  # may raise for a broken record: unlock first
        if state is None or state.done:
            return
        if outcome == _STALE:
            if seq < state.seq:  # a re-run after a crash or a change: the chain goes on from there
                delay = until(state.next_check_at, deps.clock())
                await enqueue_step(
                    deps.redis, booking_id, state.seq, prefix=deps.store.prefix, delay=delay
                )
            return
        step = Step(deps, state, job, deps.clock(), flowing=bool(flowing),
                    signal=_text(signal or ""))
        learned = own if own is not None else workspace
        step.expected = None if learned is None else float(learned)
        answered = deps.seam.answered
        await _run(step)
        next_job = await _finish(step, expected_seq=seq)
        if down and deps.seam.answered > answered:  # Seam takes our calls again
            await report_up(deps)
    finally:
        if outcome == _LOCKED:
            await _unlock(deps, booking_id, lock, job, next_job)


async def _run(step: Step) -> None:
    s = step.state
    if _expired(step):
        return
    try:
        if s.cancel_requested:
            await cancel(step)
            return
        if s.to_delete:
            await process_deletions(step)
        drop_on_change(step)
        follow_move(step)
        if s.access_code_id is None:
            code = await provision(step)
            # An adopted code holds what was asked of it, not always what the stay says now.
            if code is None or await apply_update(step):
                return
        elif await apply_update(step):
            return
        elif scheduled_by_event(step):  # Seam's event said so: no `get` to pay for
            s.transient_failures = 0
            return
        else:
            code = await step.deps.seam.get_access_code(s.access_code_id)
        s.transient_failures = 0
        observe(step, code)
        await consider_backup(step, code)
    except RateLimitWait as exc:
        step.later(exc.retry_after)
    except SeamTransientError as exc:
        _transient(step, exc)
    except SeamWorkspaceError as exc:
        await _workspace_down(step, exc)
    except SeamNotFound as exc:
        _not_found(step, exc)
    except SeamClientError as exc:
        if s.scheduled_at is not None and not s.cancel_requested:
            _transient(step, exc)  # a guarded stay is watched on, never failed by one answer
        else:
            step.fail(exc.error_type or f"seam_http_{exc.status}", str(exc))


def _transient(step: Step, exc: SeamError) -> None:
    s, cfg = step.state, step.deps.settings
    s.transient_failures += 1
    s.last_seam_error = f"{exc.route}: {exc.status or type(exc).__name__} {exc.message}"[:200]
    delay = backoff(s.transient_failures - 1, base=1.0, cap=cfg.transient_backoff_max)
    if isinstance(exc, SeamRateLimited) and exc.retry_after is not None:
        delay = max(delay, exc.retry_after)
    step.emit(
        "warning",
        "seam.request_failed",
        route=exc.route,
        status=exc.status,
        error_type=exc.error_type,
        seam_request_id=exc.request_id,
        error=exc.message,
        retry_in_s=round(delay, 3),
        transient_failures=s.transient_failures,
    )
    step.later(delay)


def _expired(step: Step) -> bool:
    """At its ends_at a guarded stay is over, one never scheduled fails `expired`: Seam removes
    the code itself then."""
    s, ends = step.state, step.state.stay.ends_at
    if s.cancel_requested or ends is None or step.now < ends:
        return False  # a cancel still removes its codes: one may outlive the stay's window
    if s.scheduled_at is not None:
        s.over = True
        step.emit("info", "stay.over", access_code_id=s.access_code_id, ends_at=ends.isoformat(),
                  state=s.state.value)
        return True
    step.fail("expired", f"the stay ended at {ends.isoformat()} before its code was scheduled")
    return True


async def _workspace_down(step: Step, exc: SeamWorkspaceError) -> None:
    """The key or endpoint is wrong for every stay: wait with backoff, log it once for all."""
    s, cfg = step.state, step.deps.settings
    s.transient_failures += 1
    s.last_seam_error = f"{exc.route}: {exc.message}"[:200]  # named by the deadline's failure
    await report_down(step.deps, exc)
    step.later(backoff(s.transient_failures - 1, base=1.0, cap=cfg.transient_backoff_max))


def _not_found(step: Step, exc: SeamError) -> None:
    s = step.state
    if s.access_code_id is None:
        step.fail(exc.error_type or "device_not_found", str(exc))
    elif s.stay.ends_at is not None and step.now >= s.stay.ends_at:
        step.fail("expired", "the stay ended before its code was confirmed on the lock")
    elif s.reprovisions < MAX_REPROVISIONS:
        provision_again(step)
    else:
        step.fail("access_code_deleted", f"the access code was deleted outside codeprov "
                  f"{s.reprovisions + 1} times; provisioned again {s.reprovisions} times")


async def _finish(step: Step, expected_seq: int) -> str | None:
    """Commit the step; its events, its next job (whose id is returned) and what it learned."""
    s = step.state
    if not s.state.is_final and s.scheduled_at is None:  # a guarded stay waits till its end
        check_deadline(step)
    if not s.state.is_final:
        check_at_risk(step)
    s.updated_at = step.now
    s.next_check_at = None if s.done else (step.next_at or step.now)
    s.seq = expected_seq + 1
    if not await step.deps.store.commit(s, expected_seq=expected_seq):
        get_logger(booking_id=s.stay.booking_id).info("step.superseded", job_id=step.job.job_id)
        return None
    step.write_events()
    prefix = step.deps.store.prefix
    if not s.done:
        await enqueue_step(
            # From now, not from the step's start: its own calls must not make the look late.
            step.deps.redis, s.booking_id, s.seq, prefix=prefix,
            delay=until(s.next_check_at, step.deps.clock()),
        )
    if step.learned is not None:
        await step.deps.latency.record(s.stay.device_id, step.learned)
    return None if s.done else job_id(s.booking_id, s.seq, prefix=prefix)


async def _unlock(
    deps: Deps, booking_id: str, lock: str, job: JobInfo, next_job: str | None
) -> None:
    prefix = deps.store.prefix
    keys = [lock, f"{prefix}:wake:{booking_id}", deps.settings.queue_name]
    now_ms = int(datetime.now(UTC).timestamp() * 1000)  # arq's scores: wall time
    await deps.redis.register_script(_UNLOCK)(keys=keys, args=[job.job_id, next_job or "", now_ms])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
