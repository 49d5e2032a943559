"""Stays waiting on one lock's create budget take turns instead of racing for each token."""

from __future__ import annotations

import pytest
from harness import Rig
from redis.asyncio import Redis

from jobs.state import Phase
from seam_sandbox import DeviceSpec, Latency, RateLimits, Scenario

pytestmark = pytest.mark.anyio

STAYS = 8


async def test_waiters_on_one_lock_come_back_once_each(redis: Redis, redis_url: str) -> None:
    """Eight stays on one lock whose budget is one create per 50 ms, none slept in a job: each
    stay runs once to reserve its turn and once more when the turn comes, instead of coming back
    with all the others after every create. Codes are ready at once, so no looks follow."""
    scenario = Scenario(
        devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0))],
        rate_limits=RateLimits(per_device=False),
    )
    overrides = {"device_creates_per_minute": 1200, "rate_max_sleep": 0.0}
    async with Rig(redis_url, scenario, overrides=overrides) as rig:
        for i in range(STAYS):
            await rig.enqueue(rig.stay(f"b{i}"))
        await rig.run()
        states = [await rig.state(f"b{i}") for i in range(STAYS)]
        stats = rig.sandbox.stats()
    assert all(s.state is Phase.SCHEDULED for s in states)
    assert all(s.create_slot is None and s.requested is None for s in states)  # turns used up
    runs = sorted(s.seq for s in states)
    assert runs[0] == 1  # the first stay's turn was free: one job
    assert runs[1:] == [2] * (STAYS - 1)  # the others: reserve, then create at their turn
    generated = sum(stats["requests"]["/access_codes/generate_code"].values())
    assert generated == STAYS  # one PIN each, fetched at its turn, no spares
