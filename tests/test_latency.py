"""Learned programming times, and the check schedule they give."""

from __future__ import annotations

import pytest
from harness import Rig
from redis.asyncio import Redis

from jobs.latency import DOWN, JUMP, POOL, UP, LatencyBook, Sample, step
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Latency, Scenario

pytestmark = pytest.mark.anyio


async def test_unknown_device_falls_back_to_workspace(redis: Redis) -> None:
    """A lock never seen uses the workspace's E; a seen lock its own, from its looks alone."""
    book = LatencyBook(redis)
    assert await book.expected("lock-1") is None
    await book.record("lock-1", Sample(ready_by=11.0, pending_for=10.0))
    assert await book.expected("lock-1") == pytest.approx(11.0)  # found at 11 s: E = 11 s
    assert await book.expected("lock-3") == pytest.approx(11.0)  # the workspace's
    await book.record("lock-2", Sample(ready_by=8.0))
    assert await book.expected("lock-2") == pytest.approx(8.0 * DOWN)
    assert await book.expected("lock-1") == pytest.approx(11.0)
    mean = (1 - POOL) * 11.0 + POOL * 8.0 * DOWN
    assert await book.expected("lock-3") == pytest.approx(mean)


async def test_ready_at_first_look_probes_down_pending_moves_up(redis: Redis) -> None:
    """Ready by the first look: E shrinks by DOWN. Pending at a look: E grows to the look that
    found it, or UP x the pending one if they were far apart, by JUMP at most, and never shrinks
    for it; absurd samples are ignored."""
    book = LatencyBook(redis)
    e = 10.0
    await book.record("lock-1", Sample(ready_by=e / DOWN))
    assert await book.expected("lock-1") == pytest.approx(e)
    await book.record("lock-1", Sample(ready_by=e * 1.02))  # a little late: from E, not the look
    e *= DOWN
    assert await book.expected("lock-1") == pytest.approx(e)
    await book.record("lock-1", Sample(ready_by=e * 1.1, pending_for=e))
    e *= 1.1  # the next look found it: E is that look
    assert await book.expected("lock-1") == pytest.approx(e)
    await book.record("lock-1", Sample(ready_by=e * 2, pending_for=e))
    e *= UP  # found much later: UP x the pending look
    assert await book.expected("lock-1") == pytest.approx(e)
    await book.record("lock-1", Sample(ready_by=1.5, pending_for=1.0))
    assert await book.expected("lock-1") == pytest.approx(e)  # an old, short look: no change
    await book.record("lock-1", Sample(ready_by=3700.0, pending_for=3600.0))
    e *= JUMP
    assert await book.expected("lock-1") == pytest.approx(e)  # one outlier moves it x4 at most
    await book.record("lock-1", Sample(ready_by=1e9, pending_for=1e8))
    await book.record("lock-1", Sample(ready_by=-1.0))
    await book.record("lock-1", Sample(ready_by=1.0, pending_for=2.0))
    assert await book.expected("lock-1") == pytest.approx(e)


async def test_a_burst_of_new_locks_leaves_the_workspace_near_their_time(redis: Redis) -> None:
    """Fifty first codes on fifty new locks, all ready by their first look at 5 s: the
    workspace's E stays at 5 x DOWN, not 5 x DOWN^50."""
    book = LatencyBook(redis)
    for i in range(50):
        await book.record(f"lock-{i}", Sample(ready_by=5.0))
    assert await book.expected("new-lock") == pytest.approx(5.0 * DOWN)


def test_fixed_programming_time_settles_just_above_it() -> None:
    """A lock that always takes 10 s, looked at E, E x 1.1, …: E settles in [10, 10 x UP), most
    first looks find the code ready, and none of them is more than UP - 1 late."""
    e: float | None = None
    first_looks, late = 0, 0.0
    for n in range(200):
        look = e or 5.0
        if look >= 10.0:
            sample = Sample(ready_by=look)
            if n >= 100:
                first_looks += 1
                late = max(late, look / 10.0 - 1)
        else:
            while look * 1.1 < 10.0:
                look *= 1.1
            sample = Sample(ready_by=look * 1.1, pending_for=look)
        e = step(e, sample)
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
