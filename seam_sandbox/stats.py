"""Request accounting for benchmarks: counts per route and status, and peak request rates.

Peak rates are measured on real monotonic time (how hard clients hit us), whatever the
sandbox clock's speed.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any

OVERALL = "*"


class PeakRate:
    """The most events seen in any 1-second window."""

    def __init__(self) -> None:
        self._recent: deque[float] = deque()
        self.peak = 0

    def hit(self, now: float) -> None:
        self._recent.append(now)
        while self._recent[0] <= now - 1.0:
            self._recent.popleft()
        self.peak = max(self.peak, len(self._recent))


class RequestStats:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.by_route: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._peaks: defaultdict[str, PeakRate] = defaultdict(PeakRate)
        self.rate_limited = 0
        self.dropped = 0

    def arrived(self, route: str) -> None:
        """Count a request towards the peak rates, as it arrives."""
        now = self._monotonic()
        self._peaks[OVERALL].hit(now)
        self._peaks[route].hit(now)

    def answered(self, route: str, status: int | str) -> None:
        self.by_route[route][str(status)] += 1
        if status == 429:
            self.rate_limited += 1

    def connection_dropped(self) -> None:
        self.dropped += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": {route: dict(c) for route, c in sorted(self.by_route.items())},
            "requests_total": sum(sum(c.values()) for c in self.by_route.values()),
            "rate_limited": self.rate_limited,
            "connections_dropped": self.dropped,
            "max_requests_per_second": self._peaks[OVERALL].peak if OVERALL in self._peaks else 0,
            "max_requests_per_second_by_route": {
                route: p.peak for route, p in sorted(self._peaks.items()) if route != OVERALL
            },
        }
