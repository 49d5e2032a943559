"""After check-out: a stay's record stays readable, and late messages get a clear answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import Rig, iso, run_cli
from redis.asyncio import Redis

from jobs.enqueue import cancel_stay, enqueue_stay
from jobs.state import Phase, StayStore
from seam_sandbox import DeviceSpec, Latency, Sandbox, SandboxClock, Scenario

pytestmark = pytest.mark.anyio

# The injected clock runs an hour behind the wall clock: a stay ending 2 s after it is over by
# the wall clock, which the code used to check every stored record against.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def one_lock() -> Scenario:
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1))])


def short_stay(booking_id: str = "B1", **extra: Any) -> dict[str, Any]:
    """A stay that ends 2 s after T0."""
    return {
        "booking_id": booking_id,
        "device_id": "lock-1",
        "starts_at": iso(T0 + timedelta(seconds=1)),
        "ends_at": iso(T0 + timedelta(seconds=2)),
        **extra,
    }


async def test_stored_stay_is_read_after_its_ends_at(redis: Redis, redis_url: str) -> None:
    """StayStore.get and `codeprov status` read a stay whose ends_at has passed."""
    async with Rig(redis_url, one_lock()) as rig:
        assert (await enqueue_stay(rig.pool, short_stay(revision=1), now=T0)).result == "enqueued"
        state = await StayStore(rig.pool).get("B1")
        assert state is not None and state.revision == 1
        status = run_cli(redis_url, "status", "B1", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "queued"


async def test_late_cancel_is_enqueued(redis: Redis, redis_url: str) -> None:
    """A cancel arriving after ends_at is enqueued, not raised; a second one is a duplicate."""
    async with Rig(redis_url, one_lock()) as rig:
        await enqueue_stay(rig.pool, short_stay(revision=1), now=T0)
        late = T0 + timedelta(seconds=3)
        cancelled = await cancel_stay(rig.pool, "B1", revision=2, now=late)
        assert (cancelled.result, cancelled.error) == ("enqueued", None)
        again = await cancel_stay(rig.pool, "B1", now=late)
        assert (again.result, again.error) == ("duplicate", "already cancelled")


async def test_late_update_is_invalid_unless_it_ends_later(redis: Redis, redis_url: str) -> None:
    """After ends_at, an update ending in the past is invalid; one ending later is enqueued."""
    async with Rig(redis_url, one_lock()) as rig:
        await enqueue_stay(rig.pool, short_stay(revision=1), now=T0)
        late = T0 + timedelta(seconds=3)
        over = short_stay(revision=2, action="update", name="Room 4")
        refused = await enqueue_stay(rig.pool, over, now=late)
        assert refused.result == "invalid"
        assert refused.error == "ends_at: in the past, the stay is already over"
        extended = short_stay(revision=3, action="update", ends_at=iso(T0 + timedelta(days=1)))
        assert (await enqueue_stay(rig.pool, extended, now=late)).result == "enqueued"
        assert (await rig.state("B1")).revision == 3


async def test_cancel_after_check_out_ends_cancelled(redis: Redis, redis_url: str) -> None:
    """A scheduled stay cancelled after its ends_at (Seam removed the code) ends `cancelled`."""
    async with Rig(redis_url, one_lock()) as rig:
        rig.sandbox = Sandbox(rig.scenario, seed=rig.seed, clock=SandboxClock(start=T0))
        stay = short_stay(ends_at=iso(T0 + timedelta(seconds=60)))
        assert (await rig.enqueue(stay)).result == "enqueued"
        await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        rig.sandbox.clock.advance(120)  # check-out has passed on the worker's clock too
        cancelled = await cancel_stay(rig.pool, "B1", now=rig.now)
        assert cancelled.result == "enqueued"
        await rig.run()
        assert (await rig.state("B1")).state is Phase.CANCELLED
        assert rig.sandbox.codes_on("lock-1") == []
