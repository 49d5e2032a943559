"""The reconciler re-enqueues stays whose job went missing, and only those."""

from __future__ import annotations

from datetime import timedelta

import pytest
from harness import Rig
from redis.asyncio import Redis

from jobs.enqueue import cancel_stay
from jobs.reconcile import reconcile
from jobs.state import Phase, StayStore
from seam_sandbox import DeviceSpec, Latency, Scenario

pytestmark = pytest.mark.anyio


def one_lock() -> Scenario:
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1))])


async def lose_job(rig: Rig, booking_id: str, seq: int = 0) -> None:
    job = f"codeprov:{booking_id}:{seq}"
    await rig.pool.delete(f"arq:job:{job}")
    await rig.pool.zrem(rig.settings.queue_name, job)


async def test_lost_job_is_requeued_and_finishes(redis: Redis, redis_url: str) -> None:
    """A queued stay whose job vanished is found, re-enqueued and provisioned."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.enqueue(rig.stay("B1"))
        await lose_job(rig, "B1")
        store = StayStore(rig.pool)
        later = rig.now + timedelta(minutes=5)
        assert await reconcile(rig.pool, store, now=later) == ["B1"]
        await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED


async def test_stays_with_jobs_are_left_alone(redis: Redis, redis_url: str) -> None:
    """A stay whose job is still queued is not touched."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.enqueue(rig.stay("B1"))
        later = rig.now + timedelta(minutes=5)
        assert await reconcile(rig.pool, StayStore(rig.pool), now=later) == []


async def test_recent_stays_get_a_grace_period(redis: Redis, redis_url: str) -> None:
    """A stay overdue by less than the grace period is not yet reconsidered."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.enqueue(rig.stay("B1"))
        await lose_job(rig, "B1")
        assert await reconcile(rig.pool, StayStore(rig.pool), now=rig.now, grace=60) == []


async def test_final_stays_leave_the_index(redis: Redis, redis_url: str) -> None:
    """Finished (cancelled) stays are dropped from the index, never re-enqueued."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        await cancel_stay(rig.pool, "B1", now=rig.now)
        await rig.run()
        assert (await rig.state("B1")).state is Phase.CANCELLED
        store = StayStore(rig.pool)
        later = rig.now + timedelta(minutes=5)
        # Still indexed and overdue, as an older snapshot restored can leave it; its job is gone.
        await rig.pool.zadd(store.index_key, {"B1": (later - timedelta(hours=1)).timestamp()})
        assert await rig.pool.zcard(rig.settings.queue_name) == 0
        assert await reconcile(rig.pool, store, now=later) == []
        assert await rig.pool.zcard(store.index_key) == 0
        assert await rig.pool.zcard(rig.settings.queue_name) == 0
