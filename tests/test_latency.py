"""Learned programming times, and the check schedule they give."""

from __future__ import annotations

import pytest
from harness import Rig
from redis.asyncio import Redis

from jobs.latency import LatencyBook
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Latency, Scenario

pytestmark = pytest.mark.anyio


async def test_unknown_device_falls_back_to_workspace(redis: Redis) -> None:
    """A lock never seen uses the workspace's mean; a seen lock its own."""
    book = LatencyBook(redis)
    assert await book.expected("lock-1") is None
    await book.record("lock-1", 10.0)
    await book.record("lock-2", 20.0)
    assert await book.expected("lock-1") == 10.0
    assert await book.expected("lock-3") == pytest.approx(0.7 * 10 + 0.3 * 20)


async def test_mean_moves_towards_new_observations(redis: Redis) -> None:
    """Each observation moves the mean by its weight; absurd values are ignored."""
    book = LatencyBook(redis)
    await book.record("lock-1", 10.0)
    await book.record("lock-1", 20.0)
    await book.record("lock-1", -1.0)
    await book.record("lock-1", 1e9)
    assert await book.expected("lock-1") == pytest.approx(13.0)


async def test_learned_latency_cuts_checks(redis: Redis, redis_url: str) -> None:
    """Once a lock's time is learned, its next codes need about one check each."""
    scenario = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.4))])
    overrides = {"poll_initial": 0.05, "poll_factor": 1.2, "poll_max": 5.0, "poll_jitter": 0.0}
    async with Rig(redis_url, scenario, overrides=overrides) as rig:
        await rig.enqueue(rig.stay("first"))
        await rig.run()
        first = await rig.state("first")
        await rig.enqueue(rig.stay("second"))
        await rig.run()
        second = await rig.state("second")
        assert first.state is second.state is Phase.SCHEDULED
        # create's answer counts as the first look; then the learned time lands right on it.
        assert first.checks > 5
        assert second.checks <= 3
