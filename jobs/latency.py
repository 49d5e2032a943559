"""How long each lock takes to program a code, learned from what the workers saw.

The first check of a new code is timed at the lock's expected programming time, then checks
follow at geometric times (E, E·r, E·r², … from when programming began), so a code is seen
scheduled within a fraction (r - 1) of its programming time, in a handful of calls. One Redis
hash holds an exponentially weighted mean per device, and one for the whole workspace (`*`)
for locks never seen before.
"""

from __future__ import annotations

from redis.asyncio import Redis

WEIGHT = 0.3  # of the newest observation
WORKSPACE = "*"


class LatencyBook:
    def __init__(self, redis: Redis, prefix: str = "codeprov") -> None:
        self.redis = redis
        self.key = f"{prefix}:latency"

    async def expected(self, device_id: str) -> float | None:
        own, workspace = await self.redis.hmget(self.key, [device_id, WORKSPACE])  # type: ignore[misc]
        value = own if own is not None else workspace
        return None if value is None else float(value)

    async def record(self, device_id: str, seconds: float) -> None:
        """Fold one observed programming time into the device's and the workspace's mean."""
        if not 0 < seconds < 24 * 3600:
            return
        own, workspace = await self.redis.hmget(self.key, [device_id, WORKSPACE])  # type: ignore[misc]
        means = {device_id: _mean(own, seconds), WORKSPACE: _mean(workspace, seconds)}
        await self.redis.hset(self.key, mapping=means)  # type: ignore[misc]


def _mean(old: bytes | None, new: float) -> float:
    return new if old is None else (1 - WEIGHT) * float(old) + WEIGHT * new
