"""`worker --burst` with guarded stays: run what is due soon, then exit.

arq's burst mode ends once its queue is empty. A scheduled stay is guarded until its end
(jobs/guard.py): its next look stays queued for hours or days, so the queue is never empty.
A burst worker here ends instead once none of its own jobs is running, no step of a stay is
due now, and no step due within BURST_HORIZON seconds is one of a record on its way to an
outcome. Guard looks, and stays whose lock loads the code weeks ahead (`deferring_creation`),
wait for the next run.
"""

from __future__ import annotations

import time
from typing import Any

from arq.worker import Worker

from jobs.state import StayStore
from worker.errors import InvalidInput

BURST_HORIZON = 120.0  # seconds: a stay's look due later than this never holds a burst run
CHECK_EVERY = 0.25  # seconds between two looks at Redis
MAX_CHECKED = 200  # jobs due soon read at most per look


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
    """No job due within BURST_HORIZON (arq's wall-time scores) is a step of a record on its way
    to an outcome, and none due now is a step of a stay at all (a guard look due runs first).
    Jobs of no stay (the reconciler's cron, which arq may hold as running elsewhere) hold
    nothing."""
    now_ms = time.time() * 1000
    soon = await redis.zrangebyscore(queue, "-inf", now_ms + BURST_HORIZON * 1000, start=0,
                                     num=MAX_CHECKED + 1, withscores=True)
    if len(soon) > MAX_CHECKED:
        return False  # busy: no need to read them all
    store, head = StayStore(redis, prefix), f"{prefix}:"
    for raw, score in soon:
        job = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not job.startswith(head):
            continue
        try:
            state = await store.get(job[len(head):].rsplit(":", 1)[0])
        except InvalidInput:
            continue  # its job is rejected: it holds nothing
        if state is None or state.done:
            continue
        if state.unsettled or score <= now_ms:
            return False
    return True
