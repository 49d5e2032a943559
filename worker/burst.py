"""`worker --burst` with guarded stays: run what is due soon, then exit.

arq's burst mode ends once its queue is empty. A scheduled stay is guarded until its end
(jobs/guard.py): its next look stays queued for hours or days, so the queue is never empty.
A burst worker here ends instead once no job is due, none of its own is running, and no record
on its way to an outcome (the set `{prefix}:unsettled`, by next due time, that every commit
keeps: jobs/commit_lua.py) is due within BURST_HORIZON seconds. Guard looks, and stays whose
lock loads the code weeks ahead (`deferring_creation`), wait for the next run.
"""

from __future__ import annotations

import time
from typing import Any

from arq.worker import Worker

from jobs.state import StayStore, unsettled_key
from worker.errors import InvalidInput

BURST_HORIZON = 120.0  # seconds: a stay's look due later than this never holds a burst run
CHECK_EVERY = 0.25  # seconds between two looks at Redis


class BurstWorker(Worker):
    """An arq Worker whose burst mode ends when only guard looks are left (module docstring)."""

    def __init__(self, *args: Any, key_prefix: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_prefix = key_prefix
        self._checked = 0.0

    async def _poll_iteration(self) -> None:
        await super()._poll_iteration()
        if not self.burst or self.max_burst_jobs >= 0 or self.tasks:
            return
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        if await only_guard_looks_left(self.pool, self.queue_name, self.key_prefix):
            self.max_burst_jobs = 0  # arq's own burst check ends the run at its next poll


async def only_guard_looks_left(redis: Any, queue: str, prefix: str) -> bool:
    """No job due now, and no record on its way to an outcome due within BURST_HORIZON. A
    member of the unsettled set whose record is gone or unreadable (its job was rejected, it
    expired, an operator deleted it) is dropped from it."""
    if await redis.zcount(queue, "-inf", time.time() * 1000):
        return False
    key, store = unsettled_key(prefix), StayStore(redis, prefix)
    soon = time.time() + BURST_HORIZON
    for raw in await redis.zrangebyscore(key, "-inf", soon, start=0, num=100):
        record = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            state = await store.get(record)
        except InvalidInput:
            state = None
        if state is not None and state.unsettled:
            return False
        await redis.zrem(key, raw)
    return not await redis.zcount(key, "-inf", soon)
