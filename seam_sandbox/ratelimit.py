"""Rate limits on real monotonic time: a per-API-key token bucket and Seam's per-device limits.

They measure how hard clients hit the sandbox, so they ignore the sandbox clock's speed.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from seam_sandbox.errors import SeamError
from seam_sandbox.scenario import RateLimits

Operation = Literal["create", "update", "delete"]


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._last = float(burst), now

    def take(self, now: float) -> float | None:
        """Take a token; None if granted, else seconds until one is available."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / self.rate


class SlidingWindow:
    """At most `limit` hits in any `window` seconds."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._hits: deque[float] = deque()

    def take(self, now: float) -> float | None:
        while self._hits and self._hits[0] <= now - self.window:
            self._hits.popleft()
        if len(self._hits) >= self.limit:
            return self._hits[0] + self.window - now
        self._hits.append(now)
        return None


class RateLimiter:
    def __init__(self, limits: RateLimits, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._monotonic = monotonic
        self._bucket = (
            TokenBucket(limits.per_key_rps, limits.per_key_burst, monotonic())
            if limits.per_key_rps is not None
            else None
        )
        self._windows: dict[tuple[Operation, str], SlidingWindow] = {}

    def check_key(self) -> None:
        if self._bucket is not None:
            self._raise_if_waiting(self._bucket.take(self._monotonic()), "this API key")

    def check_device(self, operation: Operation, device_id: str) -> None:
        if not self.limits.per_device:
            return
        window = self._windows.get((operation, device_id))
        if window is None:
            window = SlidingWindow(self._per_minute(operation))
            self._windows[(operation, device_id)] = window
        self._raise_if_waiting(window.take(self._monotonic()), f"{operation} on {device_id}")

    def _per_minute(self, operation: Operation) -> int:
        return {
            "create": self.limits.create_per_minute,
            "update": self.limits.update_per_minute,
            "delete": self.limits.delete_per_minute,
        }[operation]

    def _raise_if_waiting(self, wait: float | None, what: str) -> None:
        if wait is None:
            return
        headers = {"retry-after": str(max(1, math.ceil(wait)))} if self.limits.retry_after else {}
        raise SeamError(
            429, self.limits.error_type, f"Too many requests for {what}", headers=headers
        )
