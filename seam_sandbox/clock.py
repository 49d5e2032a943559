"""The sandbox clock: sandbox time that can run faster than real time and be pushed forward."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class SandboxClock:
    """Sandbox time = `start` + real elapsed seconds * `speed` + seconds added by `advance()`.

    Everything the scenario schedules (programming latency, fault windows, the 72 h scheduling
    lead, starts_at/ends_at) runs on this clock. Rate limits do not: they are about how hard
    clients hit the sandbox, so they use real monotonic time whatever the speed.
    `speed=0` freezes the clock, so only `advance()` moves it.
    """

    def __init__(
        self,
        speed: float = 1.0,
        start: datetime | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        if start is not None and start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.speed = speed
        self.start = (start or datetime.now(UTC)).astimezone(UTC)
        self._monotonic = monotonic
        self._origin = monotonic()
        self._advanced = 0.0

    def now(self) -> datetime:
        """The current sandbox time (UTC, aware)."""
        return self.start + timedelta(seconds=self.elapsed())

    def elapsed(self) -> float:
        """Sandbox seconds since `start`."""
        return (self._monotonic() - self._origin) * self.speed + self._advanced

    def advance(self, seconds: float) -> None:
        """Move sandbox time forward by `seconds` sandbox seconds."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self._advanced += seconds
