"""Stays scheduled by the version before guarding: put under guard once, after an upgrade.

That version took `scheduled` as final: such a stay has no queued job and is in neither the
stays index nor its lock's set, so no event could wake it and the reconciler never saw it.
The first reconciler run after the upgrade reads every record once (SCAN), queues a guard look
for each such stay (spread over `spread` seconds, so thousands do not all call Seam at once)
and indexes it; `{prefix}:upgraded:guard` then records that it was done. Their outcome was
told already: `StayState` takes such a record as reported, so no second entry is written.
"""

from __future__ import annotations

import random

from arq.connections import ArqRedis

from jobs.state import Phase, StayStore, device_index_key
from worker.errors import InvalidInput
from worker.logs import get_logger
from worker.queue import enqueue_step

MARK = "upgraded:guard"


async def guard_legacy(redis: ArqRedis, store: StayStore, *, spread: float) -> int | None:
    """Queue a guard look for each unguarded scheduled stay; how many (None: done before)."""
    mark = f"{store.prefix}:{MARK}"
    if await redis.exists(mark):
        return None
    found = 0
    async for key in redis.scan_iter(match=f"{store.prefix}:stay:*", count=500):
        record = (key.decode() if isinstance(key, bytes) else key)[len(store.key("")):]
        try:
            state = await store.get(record)
        except InvalidInput:
            continue  # a step of its own (or status) says what is wrong with it
        if state is None or state.state is not Phase.SCHEDULED or state.done:
            continue
        if await redis.zscore(store.index_key, record) is not None:
            continue  # guarded already
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zadd(store.index_key, {record: state.updated_at.timestamp()})
            pipe.sadd(device_index_key(store.prefix, state.stay.device_id), record)
            await pipe.execute()
        await enqueue_step(redis, record, state.seq, prefix=store.prefix,
                           delay=random.uniform(0, spread))
        found += 1
    await redis.set(mark, str(found))
    if found:
        get_logger().info("stay.guard_upgraded", stays=found)
    return found
