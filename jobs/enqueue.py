"""The enqueue API: how a booking system (or `codeprov enqueue`) hands codeprov a stay.

A message is `provision` (default), `update` or `cancel`, with an optional `revision` (an
integer, or the booking's updated-at timestamp). Rules, applied atomically per booking:
- a message whose revision is at or below the applied one is stale: ignored and logged
  (`duplicate`), so out-of-order delivery never undoes a newer change;
- the same stay sent again is `duplicate`, in flight or finished;
- new details for a known booking need `action: update` or a newer revision, else `invalid`;
- an update or cancel reopens a finished stay; an update for an unknown booking provisions it;
- an update, or any message with a newer revision, retries a failed stay (same details too);
- a provision or update whose `ends_at` has passed is `invalid`; a cancel after `ends_at` is
  carried out as any other (the code is deleted or found gone) and ends `cancelled`;
- a cancel for an unknown booking leaves a tombstone that ignores the older provision behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.exceptions import ResponseError, WatchError

from jobs.changeset import Decision, decide
from jobs.group import reported_key
from jobs.payload import Action, Message, Stay, parse_message, require_not_over
from jobs.state import StayState, StayStore, part_id
from worker.deps import utcnow
from worker.errors import InvalidInput
from worker.logs import get_logger
from worker.queue import JUMP_AHEAD, connect, enqueue_step, job_id
from worker.settings import Settings

Result = Literal["enqueued", "duplicate", "invalid"]
TOMBSTONE_SECONDS = 90 * 24 * 3600


@dataclass(frozen=True)
class EnqueueResult:
    booking_id: str | None
    job_id: str | None
    result: Result
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.error is None:
            data.pop("error")
        return data


async def enqueue_stay(
    redis: ArqRedis,
    stay: Stay | Mapping[str, Any],
    *,
    prefix: str = "codeprov",
    now: datetime | None = None,
) -> EnqueueResult:
    """Apply one message (a stay to provision, update or cancel). Never raises for bad input."""
    now = now or utcnow()
    raw_id = stay.get("booking_id") if isinstance(stay, Mapping) else stay.booking_id
    booking_id = raw_id if isinstance(raw_id, str) else None
    try:
        if isinstance(stay, Stay):
            require_not_over(stay, now)
            message = Message(Action.PROVISION, stay.booking_id, None, stay)
        else:
            message = parse_message(dict(stay), now=now)
    except InvalidInput as exc:
        return EnqueueResult(booking_id, None, "invalid", str(exc))
    return await apply_message(redis, message, prefix=prefix, now=now)


async def cancel_stay(
    redis: ArqRedis,
    booking_id: str,
    *,
    revision: int | str | None = None,
    prefix: str = "codeprov",
    now: datetime | None = None,
) -> EnqueueResult:
    """Cancel a stay: its code is removed from the lock, its state becomes `cancelled`."""
    message = {"booking_id": booking_id, "action": "cancel", "revision": revision}
    return await enqueue_stay(redis, message, prefix=prefix, now=now)


async def apply_message(
    redis: ArqRedis, message: Message, *, prefix: str = "codeprov", now: datetime
) -> EnqueueResult:
    """Apply a parsed message atomically; a stored record that cannot be read is `invalid`."""
    try:
        decision = await _decide(redis, message, prefix, now)
    except InvalidInput as exc:  # the stored record is broken: say so, change nothing
        return EnqueueResult(message.booking_id, None, "invalid", str(exc))
    result = await _after(redis, message, decision, now, prefix)
    current = decision.current
    resent = current is not None and message.revision is not None and (
        message.revision == current.revision)  # the same message again: heal its parts
    if result.result != "invalid" and (not decision.ignored or resent):
        try:
            await _apply_to_parts(redis, message, decision, prefix, now)
        except InvalidInput as exc:  # a part's stored record is broken
            return EnqueueResult(message.booking_id, result.job_id, "invalid", str(exc))
    return result


async def _apply_to_parts(
    redis: ArqRedis, message: Message, decision: Decision, prefix: str, now: datetime
) -> None:
    """A stay of several locks (jobs/group.py): the message goes to each further lock's record
    too; a lock no longer in the stay is cancelled (its code removed). A crash part-way is
    healed by the message sent again: the parts done already answer duplicate."""
    # Every lock that ever had a part (`known_parts`), not only the current ones: a crash
    # after the booking's record was written must not leave a removed lock's code behind.
    before = decision.current.known_parts if decision.current else []
    after = message.stay.locks[1:] if message.stay is not None else ()
    store = StayStore(redis, prefix)
    for lock in after:
        assert message.stay is not None
        stay = message.stay.model_copy(update={"device_id": lock, "device_ids": None})
        await _to_part(redis, replace(message, stay=stay), lock, prefix, now)
    for lock in before:
        if lock not in after and await redis.exists(store.key(part_id(message.booking_id, lock))):
            cancel = Message(Action.CANCEL, message.booking_id, message.revision, None)
            await _to_part(redis, cancel, lock, prefix, now)


async def _to_part(
    redis: ArqRedis, message: Message, lock: str, prefix: str, now: datetime
) -> None:
    decision = await _decide(redis, message, prefix, now, part=lock)
    state = decision.write or decision.current
    if decision.write is not None and decision.current is not None:
        await _drop_replaced(redis, decision.current, decision.write, prefix)
    if decision.write is not None and not decision.write.done:
        delay = JUMP_AHEAD if decision.write.is_urgent(now) else 0.0
        await enqueue_step(redis, decision.write.booking_id, decision.write.seq, prefix=prefix,
                           delay=delay)
    elif state is not None and not state.done:  # heals a lost job, as for the booking's own
        delay = max(0.0, ((state.next_check_at or now) - now).total_seconds())
        await enqueue_step(redis, state.booking_id, state.seq, prefix=prefix, delay=delay)


async def _decide(
    redis: ArqRedis, message: Message, prefix: str, now: datetime, part: str | None = None
) -> Decision:
    """Decide and write atomically. `part`: the lock of a further lock's record (no tombstone:
    a cancel before the stay is the booking's)."""
    store = StayStore(redis, prefix)
    record = part_id(message.booking_id, part) if part else message.booking_id
    key, tomb = store.key(record), store.tombstone_key(message.booking_id)
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key, tomb)
                current = store.load(await _read(pipe, key), record)
                decision = decide(current, None if part else await _read(pipe, tomb), message,
                                  now)
                if part:
                    decision = _as_part(decision)
                elif decision.write is not None:
                    _know_parts(decision.write, current)
                if decision.write is not None or decision.tombstone is not None:
                    pipe.multi()  # type: ignore[no-untyped-call]
                    _stage(store, pipe, decision, tomb)
                    await pipe.execute()
                break
            except WatchError:
                continue  # a step or another message committed meanwhile: decide again
    return decision


def _know_parts(write: StayState, current: StayState | None) -> None:
    """The booking's record keeps every lock that has (had) a part: removals find them."""
    known = set(current.known_parts if current else ()) | set(write.stay.locks[1:])
    write.known_parts = sorted(known)


def _as_part(decision: Decision) -> Decision:
    """A part's record is marked one; a cancel of a part never seen leaves nothing."""
    if decision.write is not None:
        decision.write.part = True
    return replace(decision, tombstone=None)


async def _read(pipe: Any, key: str) -> Any:
    """GET a stored record; one that is not a string (a hash, a list…) is broken, not Redis."""
    try:
        return await pipe.get(key)
    except ResponseError as exc:
        if not str(exc).startswith("WRONGTYPE"):
            raise
        raise InvalidInput(
            f"stored key {key} is not a string (WRONGTYPE): delete it to start the booking over"
        ) from None


def _stage(store: StayStore, pipe: Any, decision: Decision, tomb: str) -> None:
    if decision.write is not None:
        store.stage(pipe, decision.write)
        if not decision.write.part:
            pipe.delete(tomb)
        if (not decision.write.part and decision.current is not None
                and decision.write.seq != decision.current.seq):
            # A change: the stay's outcome after it is told again, as `_reopen` does per record
            pipe.delete(reported_key(store.prefix, decision.write.stay.booking_id))
    if decision.tombstone is not None:
        pipe.set(tomb, decision.tombstone, ex=TOMBSTONE_SECONDS)


async def _after(
    redis: ArqRedis, message: Message, decision: Decision, now: datetime, prefix: str
) -> EnqueueResult:
    bid, log = message.booking_id, get_logger(booking_id=message.booking_id)
    if decision.result == "invalid":
        return EnqueueResult(bid, None, "invalid", decision.note)
    if decision.ignored:
        log.info(
            "stay.change_ignored",
            action=message.action.value,
            revision=message.revision,
            reason=decision.note,
        )
    state = decision.write or decision.current
    if decision.write is not None and decision.current is not None:
        await _drop_replaced(redis, decision.current, decision.write, prefix)
    if state is not None and not state.done:
        # Also heals a chain whose job was lost: enqueueing a step is idempotent.
        if decision.write is not None:
            delay = JUMP_AHEAD if decision.write.is_urgent(now) else 0.0
        else:
            delay = max(0.0, ((state.next_check_at or now) - now).total_seconds())
        await enqueue_step(redis, bid, state.seq, prefix=prefix, delay=delay)
    if decision.result == "enqueued" and decision.current is not None:
        log.info("stay.change_accepted", action=message.action.value, revision=message.revision)
    seq = state.seq if state is not None else None
    jid = job_id(bid, seq, prefix=prefix) if seq is not None else None
    return EnqueueResult(bid, jid, decision.result, decision.note)


# KEYS: arq's queue, the replaced job's key, its in-progress key. ARGV: the job id. A job that
# is not running is removed; a running one ends by itself (its seq is stale).
_DROP = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
end
"""


async def _drop_replaced(redis: ArqRedis, before: StayState, after: StayState, prefix: str) -> None:
    """A change replaced the stay's queued step (a guard look days ahead, a deferred check):
    take it out of the queue, so it neither waits there for days nor counts as queued."""
    if after.seq == before.seq or before.done:
        return
    old = job_id(before.booking_id, before.seq, prefix=prefix)
    keys = [redis.default_queue_name, job_key_prefix + old, in_progress_key_prefix + old]
    await redis.register_script(_DROP)(keys=keys, args=[old])


async def enqueue_stays(
    stays: list[Mapping[str, Any]], *, settings: Settings | None = None
) -> list[EnqueueResult]:
    """Connect with settings from the environment, apply each message, close."""
    settings = settings or Settings()
    redis = await connect(settings)
    try:
        return [await enqueue_stay(redis, s, prefix=settings.key_prefix) for s in stays]
    finally:
        await redis.aclose()


def enqueue_stays_sync(
    stays: list[Mapping[str, Any]], *, settings: Settings | None = None
) -> list[EnqueueResult]:
    """The same, for code that is not async."""
    import anyio

    return anyio.run(lambda: enqueue_stays(stays, settings=settings))
