"""`python -m bench.local_worker`: a codeprov worker whose limiter lives in its own process.

The baseline of `python -m bench ratelimit`: what Celery's `rate_limit` and aiolimiter-style
limits do. The same worker, job code and Seam client as `codeprov worker`; only the limiter is
swapped for `LocalLimiter`, which spends the same budgets with the same GCRA arithmetic, but in
process memory: N processes each allow the full rate, and a 429 pauses only the process that
received it. Configured from the environment, like `codeprov worker`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from worker.limiter import GRANTED, PAUSED, REFUSED, Budgets, Limiter, Rate
from worker.settings import Settings


class LocalLimiter(Limiter):
    """Limiter's budgets and waiting, with buckets and penalties in this process only."""

    def __init__(
        self,
        redis: Redis,
        budgets: Budgets,
        *,
        prefix: str,
        max_sleep: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(redis, budgets, prefix=prefix, max_sleep=max_sleep)  # redis: unused
        self._monotonic = monotonic
        self._tats: dict[str, float] = {}
        self._penalties: dict[str, float] = {}

    async def _gcra(
        self,
        buckets: Sequence[tuple[str, Rate]],
        penalties: Sequence[str],
        *,
        ahead: float | None = None,
    ) -> tuple[int, float]:
        """The arithmetic of Limiter's Lua script, on this process's clock and dicts."""
        now = self._monotonic()
        wait = max((self._penalties.get(key, 0.0) - now for key in penalties), default=0.0)
        if wait > 0:
            return PAUSED, wait
        tats = {key: max(self._tats.get(key, now), now) for key, _ in buckets}
        wait = max((tats[key] - now - _seconds(r.tolerance_ms) for key, r in buckets), default=0.0)
        if wait > 0 and (ahead is None or wait > ahead):
            return REFUSED, wait
        wait = max(wait, 0.0)
        for key, r in buckets:
            self._tats[key] = max(tats[key], now + wait) + _seconds(r.interval_ms)
        return GRANTED, wait

    async def penalize(self, device_id: str | None, seconds: float) -> None:
        key = self.penalty_key(device_id)
        until = self._monotonic() + seconds
        self._penalties[key] = max(self._penalties.get(key, 0.0), until)


def _seconds(ms: int) -> float:
    return ms / 1000


def local_limiter(redis: Any, settings: Settings) -> Limiter:
    """A limiter factory for make_worker: each process keeps its own buckets (the baseline)."""
    from worker.wiring import budgets

    return LocalLimiter(redis, budgets(settings), prefix=settings.key_prefix,
                        max_sleep=settings.rate_max_sleep)


def main() -> None:
    from worker.commands import load_settings
    from worker.logs import configure
    from worker.runtime import make_worker

    settings = load_settings()
    configure(fmt=settings.log_format, level=settings.log_level,
              secrets=[settings.seam_api_key.get_secret_value()])
    asyncio.set_event_loop(asyncio.new_event_loop())
    make_worker(settings, limiter_factory=local_limiter).run()


if __name__ == "__main__":
    main()


__all__ = ["LocalLimiter", "local_limiter"]
