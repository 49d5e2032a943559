"""The reconciler: stays that are not final but whose next job is gone get it back.

A job can vanish when Redis loses writes (a failover, an old snapshot restored) or when a
process dies between recording a stay and queueing its job. Every stay that is not final sits
in the `codeprov:stays` index scored by when its next step is due; a stay overdue by more than
`grace` seconds whose job key is missing is re-enqueued. Enqueueing is idempotent per step, so
a reconciler racing a worker never doubles a job.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from jobs import group
from jobs.state import StayStore, booking_of
from worker.errors import InvalidInput
from worker.logs import get_logger
from worker.queue import enqueue_step, job_id


async def reconcile(
    redis: ArqRedis, store: StayStore, *, now: datetime, grace: float = 60.0, limit: int = 1000
) -> list[str]:
    """Re-enqueue overdue stays that have no job; returns their booking ids."""
    cutoff = (now - timedelta(seconds=grace)).timestamp()
    overdue = await redis.zrangebyscore(store.index_key, "-inf", cutoff, start=0, num=limit)
    requeued = []
    for raw in overdue:
        booking_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if await _requeue(redis, store, booking_id):
            requeued.append(booking_id)
    await regroup(store, limit=limit)
    return requeued


async def regroup(store: StayStore, *, grace: float = 30.0, limit: int = 1000) -> int:
    """Report the outcome of multi-lock stays a crash left unreported (jobs/group.py): those
    marked before a commit more than `grace` seconds ago (wall time). Returns how many."""
    key = f"{store.prefix}:{group.REGROUP}"
    marked = await store.redis.zrangebyscore(key, "-inf", time.time() - grace, start=0,
                                             num=limit)
    for raw in marked:
        try:
            await group.report(store, raw.decode() if isinstance(raw, bytes) else str(raw))
        except InvalidInput as exc:
            get_logger(booking_id=str(raw)).error("stay.unreadable", reason=str(exc))
            await store.redis.zrem(key, raw)
    return len(marked)


async def _requeue(redis: ArqRedis, store: StayStore, booking_id: str) -> bool:
    try:
        state = await store.get(booking_id)
    except InvalidInput as exc:
        get_logger(booking_id=booking_of(booking_id)).error("stay.unreadable", reason=str(exc))
        await redis.zrem(store.index_key, booking_id)
        return False
    if state is None or state.done:
        await redis.zrem(store.index_key, booking_id)
        return False
    if await redis.exists(job_key_prefix + job_id(booking_id, state.seq, prefix=store.prefix)):
        return False
    if not await enqueue_step(redis, booking_id, state.seq, prefix=store.prefix):
        return False
    get_logger(booking_id=booking_of(booking_id)).warning(
        "stay.requeued", seq=state.seq, state=state.state.value
    )
    return True
