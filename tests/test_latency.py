"""Learned programming times, and the check schedule they give."""

from __future__ import annotations

import pytest
from harness import Rig
from redis.asyncio import Redis

from jobs.latency import DOWN, JUMP, UP, LatencyBook, Sample, step
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Latency, Scenario

pytestmark = pytest.mark.anyio


async def test_unknown_device_falls_back_to_workspace(redis: Redis) -> None:
    """A lock never seen uses the workspace's E; a seen lock its own."""
    book = LatencyBook(redis)
    assert await book.expected("lock-1") is None
    await book.record("lock-1", Sample(first_look=False, pending_for=10.0), used=5.0)
    assert await book.expected("lock-1") == 10.0  # a lock's first code sets its E, unbounded
    assert await book.expected("lock-3") == pytest.approx(10.0)  # the workspace's, bounded x4
    await book.record("lock-2", Sample(first_look=True), used=10.0)
    assert await book.expected("lock-2") == pytest.approx(10.0 * DOWN)
    assert await book.expected("lock-1") == 10.0


async def test_ready_at_first_look_probes_down_pending_moves_up(redis: Redis) -> None:
    """Ready by the first look: E shrinks by DOWN. Pending at a look: E grows to that look, by
    UP at least and JUMP at most; absurd values are ignored."""
    book = LatencyBook(redis)
    await book.record("lock-1", Sample(first_look=False, pending_for=10.0), used=5.0)
    await book.record("lock-1", Sample(first_look=True), used=10.0)
    assert await book.expected("lock-1") == pytest.approx(10.0 * DOWN)
    await book.record("lock-1", Sample(first_look=False, pending_for=9.4), used=9.3)
    assert await book.expected("lock-1") == pytest.approx(10.0 * DOWN * UP)  # at least UP
    await book.record("lock-1", Sample(first_look=False, pending_for=3600.0), used=10.0)
    assert await book.expected("lock-1") == pytest.approx(10.0 * DOWN * UP * JUMP)  # one outlier
    before = await book.expected("lock-1")
    await book.record("lock-1", Sample(first_look=False, pending_for=1e9), used=10.0)
    await book.record("lock-1", Sample(first_look=True), used=-1.0)
    assert await book.expected("lock-1") == before


def test_fixed_programming_time_settles_just_above_it() -> None:
    """A lock that always takes 10 s: E settles in [10, 10 x UP), most first looks find the code
    ready, and none of them is more than UP - 1 late."""
    e, first_looks, late = 5.0, 0, 0.0
    for n in range(200):
        if e >= 10.0:
            sample = Sample(first_look=True)
            if n >= 100:
                first_looks += 1
                late = max(late, e / 10.0 - 1)
        else:
            sample = Sample(first_look=False, pending_for=e)
        e = step(e, sample, bounded=n > 0)
    assert 0.5 <= first_looks / 100 <= 0.8
    assert late < UP - 1


async def test_learned_latency_cuts_checks(redis: Redis, redis_url: str) -> None:
    """Once a lock's time is learned, its next codes need one or two looks each."""
    scenario = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.4))])
    overrides = {"poll_initial": 0.05, "poll_factor": 1.2, "poll_max": 5.0, "poll_jitter": 0.0}
    async with Rig(redis_url, scenario, overrides=overrides) as rig:
        states = []
        for name in ("first", "second", "third"):
            await rig.enqueue(rig.stay(name))
            await rig.run()
            states.append(await rig.state(name))
        assert all(s.state is Phase.SCHEDULED for s in states)
        # create's answer counts as a check; the first code looks from 0.05 s up to 0.4 s.
        assert states[0].checks > 5
        assert states[1].checks <= 4
        assert states[2].checks <= 3
