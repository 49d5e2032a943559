"""Fairness: a stay starting soon is not stuck behind a big batch of later ones."""

from __future__ import annotations

import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from seam_sandbox import DeviceSpec, Latency, Scenario

pytestmark = pytest.mark.anyio


async def test_urgent_stay_jumps_the_backlog(redis: Redis, redis_url: str) -> None:
    """Enqueued after 40 stays two days out, a stay starting in 2 hours is created first."""
    scenario = Scenario(devices=[DeviceSpec(id=f"lock-{i}", latency=Latency.fixed(0.05))
                                 for i in range(8)])
    async with Rig(redis_url, scenario, overrides={"max_jobs": 1}) as rig:
        for i in range(40):
            await rig.enqueue(rig.stay(f"later-{i}", device=i % 8, days_ahead=2))
        await rig.enqueue(rig.stay("soon", device=0, days_ahead=2 / 24))
        with capture_logs() as logs:
            await rig.run()
        created = [e["booking_id"] for e in logs if e["event"] == "access_code.created"]
        assert created[0] == "soon"
        assert len(created) == 41
