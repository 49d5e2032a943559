"""How long each lock takes to program a code, learned from what the workers saw.

A code's first look is timed at the lock's expected programming time E, then looks follow at
E·r, E·r², … from when programming began (jobs/observe.py). E is kept near the time most of the
lock's codes are ready by, with what each code tells for certain:
- seen scheduled at its first look: it was ready by E. E moves down a little (x DOWN), probing
  for a faster lock; a look much later than E (a busy queue) tells nothing and is ignored;
- seen pending at least once: it needed more than that last pending look. E moves up to it, at
  least x UP and at most x JUMP a code, so one lock that was offline for an hour does not
  make its next codes wait an hour for their first look.
Successes pull down by x DOWN and misses push up by at least x UP, so E settles where about
ln UP / (ln UP + ln 1/DOWN) ≈ 2/3 of codes are ready by their first look, and the rest are
found one look (a fraction r - 1) later. A lock seen for the first time starts from the
workspace's E (`*`), and its first code sets its own E without the x JUMP bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

WORKSPACE = "*"
DOWN = 0.93
UP = 1.15
JUMP = 4.0
LATE = 1.5  # a first look later than this x E says nothing about E


@dataclass(frozen=True)
class Sample:
    """What one code showed: ready by its first look, or pending until `pending_for` seconds."""

    first_look: bool
    pending_for: float = 0.0


class LatencyBook:
    def __init__(self, redis: Redis, prefix: str = "codeprov") -> None:
        self.redis = redis
        self.key = f"{prefix}:latency"

    async def expected(self, device_id: str) -> float | None:
        own, workspace = await self.redis.hmget(self.key, [device_id, WORKSPACE])  # type: ignore[misc]
        value = own if own is not None else workspace
        return None if value is None else float(value)

    async def record(self, device_id: str, sample: Sample, used: float) -> None:
        """Fold one code's sample into the device's E and the workspace's; `used`: the E its
        looks were timed by."""
        if not (0 < used < 24 * 3600 and 0 <= sample.pending_for < 24 * 3600):
            return
        own, workspace = await self.redis.hmget(self.key, [device_id, WORKSPACE])  # type: ignore[misc]
        mine = float(own) if own is not None else used
        pool = float(workspace) if workspace is not None else used
        means = {
            device_id: step(mine, sample, bounded=own is not None),
            WORKSPACE: step(pool, sample),
        }
        await self.redis.hset(self.key, mapping=means)  # type: ignore[misc]


def step(expected: float, sample: Sample, *, bounded: bool = True) -> float:
    """The next E after one sample."""
    if sample.first_look:
        return expected * DOWN
    grown = max(expected * UP, sample.pending_for)
    return min(grown, expected * JUMP) if bounded else grown
