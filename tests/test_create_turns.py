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


async def test_an_urgent_stay_does_not_wait_behind_every_turn(redis: Redis, redis_url: str) -> None:
    """Twelve stays two days out take turns on a lock that creates two a second, but only within
    a 1 s horizon; a stay starting in an hour, enqueued once the first of them is created, is
    created within the next few turns, not after all twelve."""
    scenario = Scenario(
        devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0))],
        rate_limits=RateLimits(per_device=False),
    )
    overrides = {"device_creates_per_minute": 120, "rate_max_sleep": 0.0,
                 "create_turn_horizon": 1.0}
    async with Rig(redis_url, scenario, overrides=overrides) as rig:
        for i in range(12):
            await rig.enqueue(rig.stay(f"later{i}", days_ahead=2))
        urgent_sent = False

        async def done() -> bool:
            nonlocal urgent_sent
            states = [await rig.state(f"later{i}") for i in range(12)]
            if not urgent_sent and any(s.state is Phase.SCHEDULED for s in states):
                await rig.enqueue(rig.stay("urgent", days_ahead=1 / 24))
                urgent_sent = True
            finished = [s for s in states if s.state is Phase.SCHEDULED]
            if not urgent_sent or len(finished) < 12:
                return False
            return (await rig.state("urgent")).state is Phase.SCHEDULED

        await rig.run_until(done, timeout=40)
        later = [await rig.state(f"later{i}") for i in range(12)]
        urgent = await rig.state("urgent")
    assert urgent.scheduled_at is not None
    behind = sum(1 for s in later if s.scheduled_at and s.scheduled_at > urgent.scheduled_at)
    assert behind >= 6, sorted(s.scheduled_at for s in later if s.scheduled_at)
