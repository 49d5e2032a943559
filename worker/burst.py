"""`worker --burst` with guarded stays: run what is due, then exit.

arq's burst mode ends once its queue is empty. A scheduled stay is guarded until its end
(jobs/guard.py): its next look stays queued for hours or days, so the queue is never empty.
A burst worker here ends instead once every job due within BURST_HORIZON seconds is a guard
look of a scheduled stay that is not due yet (or a job of a stay that is done): the work of
getting codes onto locks is finished, and the guard looks wait for the next run.
"""

from __future__ import annotations

import time
from typing import Any

from arq.worker import Worker

from jobs.state import Phase, StayStore
from worker.errors import InvalidInput

BURST_HORIZON = 120.0  # seconds: a look due later than this never holds a burst run
CHECK_EVERY = 0.25  # seconds between two looks at the queue (each reads the due stays)


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
    """Whether every job due within BURST_HORIZON is a not-yet-due look of a scheduled stay."""
    now_ms = time.time() * 1000
    store, head = StayStore(redis, prefix), f"{prefix}:"
    due = await redis.zrangebyscore(queue, "-inf", now_ms + BURST_HORIZON * 1000,
                                    withscores=True)
    for raw, score in due:
        job = raw.decode() if isinstance(raw, bytes) else str(raw)
        booking_id = job[len(head):].rsplit(":", 1)[0] if job.startswith(head) else None
        if booking_id is None:
            if score <= now_ms:
                return False  # a due job of another kind (the reconciler): let it run
            continue
        try:
            state = await store.get(booking_id)
        except InvalidInput:
            return False  # its job will say what is wrong with the record
        if state is None or state.done:
            continue
        if state.state is not Phase.SCHEDULED or score <= now_ms:
            return False
    return True
