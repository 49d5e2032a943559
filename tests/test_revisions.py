"""The applied revision only moves forward, and a broken stored record is answered, not raised."""

from __future__ import annotations

import pytest
from harness import Rig
from redis.asyncio import Redis

from jobs.enqueue import cancel_stay
from jobs.state import Phase, StayStore
from seam_sandbox import DeviceSpec, Latency, Scenario

pytestmark = pytest.mark.anyio


def one_lock() -> Scenario:
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1))])


async def test_step_commit_keeps_a_newer_revision(redis: Redis, redis_url: str) -> None:
    """A step committing at its seq keeps the revision a duplicate recorded meanwhile."""
    async with Rig(redis_url, one_lock()) as rig:
        stay = rig.stay("B1", revision=1)
        await rig.enqueue(stay)
        store = StayStore(rig.pool)
        in_flight = await rig.state("B1")  # what a step loaded, before the message below
        assert (await rig.enqueue({**stay, "revision": 5})).result == "duplicate"
        assert (await rig.state("B1")).revision == 5
        expected, in_flight.seq, in_flight.state = in_flight.seq, in_flight.seq + 1, Phase.WAITING
        assert await store.commit(in_flight, expected_seq=expected)
        stored = await rig.state("B1")
        assert (stored.revision, stored.state, in_flight.revision) == (5, Phase.WAITING, 5)
        older = await rig.enqueue(rig.stay("B1", days_ahead=2, revision=3, action="update"))
        assert older.result == "duplicate"
        assert older.error == "stale: revision 3 is not newer than applied 5"


async def test_newer_cancel_of_a_cancelled_stay_is_recorded(redis: Redis, redis_url: str) -> None:
    """Cancel r5 then cancel r7: r7 is recorded, so a late update r6 is stale."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.enqueue(rig.stay("B1", revision=1))
        assert (await cancel_stay(rig.pool, "B1", revision=5)).result == "enqueued"
        again = await cancel_stay(rig.pool, "B1", revision=7)
        assert (again.result, again.error) == ("duplicate", "already cancelled")
        late = await rig.enqueue(rig.stay("B1", days_ahead=2, revision=6, action="update"))
        assert late.result == "duplicate"
        assert late.error == "stale: revision 6 is not newer than applied 7"
        stored = await rig.state("B1")
        assert (stored.revision, stored.cancel_requested) == (7, True)


async def test_newer_cancel_before_provision_is_recorded(redis: Redis, redis_url: str) -> None:
    """Cancel r5 and r7 of an unknown booking: a provision r6 after them is ignored."""
    async with Rig(redis_url, one_lock()) as rig:
        assert (await cancel_stay(rig.pool, "B1", revision=5)).result == "enqueued"
        assert (await cancel_stay(rig.pool, "B1", revision=7)).result == "duplicate"
        late = await rig.enqueue(rig.stay("B1", revision=6))
        assert (late.result, late.error) == ("duplicate", "the booking was cancelled")
        assert await rig.pool.get("codeprov:stay:B1") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{not json", "stored state of booking 'B1' is invalid: stay: Invalid JSON"),
        (b'{"stay": 5}', "stored state of booking 'B1' is invalid: stay: Input should be"),
    ],
)
async def test_broken_stored_record_is_answered_invalid(
    redis: Redis, redis_url: str, raw: bytes, expected: str
) -> None:
    """A message for a booking whose stored record does not load is `invalid`, naming it."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.pool.set("codeprov:stay:B1", raw)
        for answer in (await rig.enqueue(rig.stay("B1")), await cancel_stay(rig.pool, "B1")):
            assert answer.result == "invalid"
            assert (answer.error or "").startswith(expected), answer.error
        assert await rig.pool.get("codeprov:stay:B1") == raw


async def test_broken_tombstone_is_answered_invalid(redis: Redis, redis_url: str) -> None:
    """A message for a booking whose stored cancel is not a revision is `invalid`, naming it."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.pool.set("codeprov:cancelled:B1", b"seven")
        answer = await rig.enqueue(rig.stay("B1", revision=3))
        assert (answer.result, answer.error) == (
            "invalid",
            "stored cancel of booking 'B1' is invalid: not a revision",
        )
