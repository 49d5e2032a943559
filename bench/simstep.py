"""Simulated time for `bench guarded`: the real step function, run in order of each stay's next
check on a frozen sandbox clock, with the deps' clock = the sandbox's.

No arq worker runs. The queue arq would read still matters to the event path: a webhook or feed
event wakes a stay by moving its queued job's score to now (jobs/events.py). So every stay's
next job is parked at a far-future score after each step; a job found below it was woken, and
runs at the current simulated time (as arq would run it at once).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bench.seamlog import SeamLog
from jobs.pipeline import advance_stay
from jobs.state import StayState
from jobs.step import JobInfo
from seam_sandbox import Sandbox
from worker.deps import Deps
from worker.queue import job_id

PARKED = 2**52  # ms: no arq score reaches it; a wake sets a job's score to now


@dataclass
class Tally:
    """Steps and Seam calls (by route) per kind of step."""

    steps: Counter[str] = field(default_factory=Counter)
    calls: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, kind: str, routes: list[str]) -> None:
        self.steps[kind] += 1
        self.calls.setdefault(kind, Counter()).update(routes)


@dataclass
class SimRunner:
    deps: Deps
    sandbox: Sandbox
    log: SeamLog
    tally: Tally = field(default_factory=Tally)
    _heap: list[tuple[datetime, int, str, int]] = field(default_factory=list)
    _order: int = 0

    @property
    def now(self) -> datetime:
        return self.sandbox.clock.now()

    def advance_to(self, at: datetime) -> None:
        gap = (at - self.now).total_seconds()
        if gap > 0:
            self.sandbox.clock.advance(gap)

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    async def schedule(self, booking_id: str) -> None:
        """Queue the stay's next step (from its record) and park its arq job."""
        state = await self.deps.store.get(booking_id)
        if state is None or (state.next_check_at is None and state.state.is_final):
            return
        at = state.next_check_at or self.now
        self._order += 1
        heapq.heappush(self._heap, (at, self._order, booking_id, state.seq))
        job = job_id(booking_id, state.seq, prefix=self.deps.store.prefix)
        await self.deps.redis.zadd(self.deps.settings.queue_name, {job: PARKED}, xx=True)

    async def run_due(self) -> None:
        """Every step due by now, in order of its next check."""
        while self._heap and self._heap[0][0] <= self.now:
            _, _, booking_id, seq = heapq.heappop(self._heap)
            await self.step(booking_id, seq, woken=False)

    async def run_woken(self) -> int:
        """The steps an event moved to now; how many."""
        queue = self.deps.settings.queue_name
        jobs = await self.deps.redis.zrangebyscore(queue, "-inf", PARKED - 1)
        for raw in jobs:
            job = raw.decode() if isinstance(raw, bytes) else str(raw)
            booking_id, _, seq = job.removeprefix(f"{self.deps.store.prefix}:").rpartition(":")
            await self.step(booking_id, int(seq), woken=True)
        return len(jobs)

    async def step(self, booking_id: str, seq: int, *, woken: bool) -> None:
        """Run one step as arq would (the job leaves the queue first) if it is still current."""
        state = await self.deps.store.get(booking_id)
        job = job_id(booking_id, seq, prefix=self.deps.store.prefix)
        await self.deps.redis.zrem(self.deps.settings.queue_name, job)
        if state is None or state.seq != seq:
            return  # woken or re-planned since: a later step is queued
        kind = self._kind(state, woken)
        before = len(self.log.calls)
        await advance_stay(self.deps, booking_id, seq, JobInfo(job))
        self.tally.add(kind, [c.route for c in self.log.calls[before:]])
        after = await self.deps.store.get(booking_id)
        if after is not None and after.seq > seq:
            await self.schedule(booking_id)

    def _kind(self, state: StayState, woken: bool) -> str:
        """What the step is: setup (not yet scheduled), or which kind of guard look."""
        if state.state.value != "scheduled":
            return "setup"
        if woken:
            return "woken"
        starts, ends = state.stay.starts_at, state.stay.ends_at
        margin = timedelta(seconds=self.deps.settings.at_risk_margin)
        if starts is not None and abs(self.now - (starts - margin)) <= timedelta(seconds=1):
            return "confirming"
        if ends is not None and self.now >= ends:
            return "end"
        return "safety"
