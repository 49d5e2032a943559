"""The enqueue API: how a booking system (or `codeprov enqueue`) hands codeprov a stay.

Enqueueing creates the stay's state record (state `queued`) and its first job, both keyed by
booking_id, so sending the same stay twice is a harmless no-op answered `duplicate`, whether it
is still in flight or already final. A different payload for a known booking is `invalid`: the
stay already exists. Re-enqueueing a finished stay does nothing; delete its key to start over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from arq.connections import ArqRedis

from jobs.payload import Stay, parse_stay
from jobs.state import StayState, StayStore
from worker.deps import utcnow
from worker.errors import InvalidInput
from worker.queue import connect, enqueue_step, job_id
from worker.settings import Settings

Result = Literal["enqueued", "duplicate", "invalid"]


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
    """Enqueue one stay. Never raises for bad input: the result says `invalid` and why."""
    now = now or utcnow()
    raw_id = stay.get("booking_id") if isinstance(stay, Mapping) else stay.booking_id
    booking_id = raw_id if isinstance(raw_id, str) else None
    try:
        valid = stay if isinstance(stay, Stay) else parse_stay(dict(stay), now=now)
    except InvalidInput as exc:
        return EnqueueResult(booking_id, None, "invalid", str(exc))
    store = StayStore(redis, prefix)
    state = StayState(stay=valid, enqueued_at=now, updated_at=now)
    if await store.create(state):
        await enqueue_step(redis, valid.booking_id, 0)
        return EnqueueResult(valid.booking_id, job_id(valid.booking_id, 0), "enqueued")
    return await _existing(store, redis, valid)


async def _existing(store: StayStore, redis: ArqRedis, stay: Stay) -> EnqueueResult:
    known = await store.get(stay.booking_id)
    if known is None:  # expired between our two commands: rare, and safe to report
        return EnqueueResult(
            stay.booking_id, None, "invalid", "stay record vanished; enqueue again"
        )
    if known.stay != stay:
        return EnqueueResult(
            stay.booking_id,
            None,
            "invalid",
            "booking_id is already enqueued with different device, dates or name",
        )
    if not known.state.is_final:
        # Heals a chain whose job was lost (e.g. Redis restored from an old snapshot).
        due = known.next_check_at
        delay = max(0.0, (due - utcnow()).total_seconds()) if due else 0.0
        await enqueue_step(redis, stay.booking_id, known.seq, delay=delay)
    return EnqueueResult(stay.booking_id, job_id(stay.booking_id, known.seq), "duplicate")


async def enqueue_stays(
    stays: list[Mapping[str, Any]], *, settings: Settings | None = None
) -> list[EnqueueResult]:
    """Connect with settings from the environment, enqueue each stay, close."""
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
