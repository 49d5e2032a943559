"""The working copy of one step: the stay's state, what happened, and when to look next."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobs.latency import Sample
from jobs.payload import Stay
from jobs.state import Failure, Phase, StayState
from worker.deps import Deps
from worker.logs import flat, get_logger


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    job_try: int = 1


@dataclass
class Step:
    deps: Deps
    state: StayState
    job: JobInfo
    now: datetime
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    next_at: datetime | None = None
    expected: float | None = None  # the lock's learned programming time, seconds
    learned: Sample | None = None  # what this step saw of the lock's programming time
    flowing: bool = False  # Seam's events reach us (webhooks or the feed): looks may be sparse
    signal: str = ""  # what events said of the code since the last step (jobs/events.py)

    @property
    def stay(self) -> Stay:
        return self.state.stay

    def emit(self, level: str, event: str, **fields: Any) -> None:
        """Queue a log event; it is written only if the step's state commits."""
        self.events.append((level, event, flat(fields)))

    async def checkpoint(self) -> bool:
        """Commit what the step did so far at the record's seq; False if a change came first.

        What is committed is logged at once: a step superseded later must not lose the events
        of what it already stored (an `access_code.moved` before a create's intent).
        """
        if not await self.deps.store.commit(self.state, expected_seq=self.state.seq):
            return False
        self.write_events()
        return True

    def write_events(self) -> None:
        """Log the queued events, once: call only after their state is committed."""
        s = self.state
        log = get_logger(
            booking_id=s.stay.booking_id,
            device_id=s.stay.device_id,
            job_id=self.job.job_id,
            job_try=self.job.job_try,
        )
        for level, event, fields in self.events:
            fields.setdefault("elapsed_s", elapsed(s, self.now))
            getattr(log, level)(event, **fields)
        self.events.clear()

    def fail(self, reason: str, message: str) -> None:
        self.state.state = Phase.FAILED
        self.state.failure = Failure(reason=reason, message=message)
        self.emit("error", "provisioning.failed", reason=reason, message=message)

    def later(self, seconds: float) -> None:
        """Look again in `seconds` (the earliest of several requests wins)."""
        at = self.now + timedelta(seconds=max(0.0, seconds))
        self.next_at = at if self.next_at is None else min(self.next_at, at)


def until(at: datetime | None, now: datetime) -> float:
    return 0.0 if at is None else max(0.0, (at - now).total_seconds())


def elapsed(s: StayState, now: datetime) -> float:
    return round((now - s.enqueued_at).total_seconds(), 3)
