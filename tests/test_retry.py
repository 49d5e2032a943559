"""Retrying a failed stay: a newer revision reopens it, and a dead code is replaced."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.guard import MAX_REPROVISIONS
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Latency, Scenario

pytestmark = pytest.mark.anyio


def one_lock() -> Scenario:
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1))])


async def delete_behind_our_back(rig: Rig, access_code_id: str) -> None:
    """Someone deletes the stay's code in Seam directly; the lock has removed it a minute on."""
    async with httpx.AsyncClient(
        transport=rig.transport(),
        base_url="http://sandbox",
        headers={"Authorization": f"Bearer {rig.sandbox.api_key}"},
    ) as http:
        answer = await http.post("/access_codes/delete", json={"access_code_id": access_code_id})
        assert answer.status_code == 200
    rig.sandbox.clock.advance(60)


async def failed_code_deleted(rig: Rig) -> tuple[dict[str, Any], str]:
    """B1 scheduled, updated to r2; then its code deleted outside codeprov MAX_REPROVISIONS
    + 1 times (a new code is provisioned each time but the last): `access_code_deleted`."""
    await rig.enqueue(rig.stay("B1", revision=1))
    await rig.run()
    moved = rig.stay("B1", days_ahead=2, revision=2, action="update")
    assert (await rig.enqueue(moved)).result == "enqueued"
    await rig.run()
    for _ in range(MAX_REPROVISIONS + 1):
        dead = (await rig.state("B1")).access_code_id
        assert dead is not None
        await delete_behind_our_back(rig, dead)
        await rig.make_due()  # the guard's next look finds it gone
        await rig.run()
    state = await rig.state("B1")
    assert state.state is Phase.FAILED and state.failure is not None
    assert state.failure.reason == "access_code_deleted" and dead is not None
    return moved, dead


async def assert_one_new_code(rig: Rig, dead: str) -> None:
    state = await rig.state("B1")
    assert state.state is Phase.SCHEDULED
    [code] = rig.sandbox.codes_on("lock-1")
    assert code["access_code_id"] == state.access_code_id != dead
    assert code["name"] == "Stay B1"


async def test_same_details_newer_revision_retries_failed_stay(
    redis: Redis, redis_url: str
) -> None:
    """A failed stay sent again unchanged with a newer revision ends scheduled with a new code."""
    async with Rig(redis_url, one_lock()) as rig:
        moved, dead = await failed_code_deleted(rig)
        retry = await rig.enqueue({**moved, "revision": 3})
        assert (retry.result, retry.error) == ("enqueued", None)
        await rig.run()
        await assert_one_new_code(rig, dead)


async def test_changed_update_of_a_dead_code_provisions_anew(
    redis: Redis, redis_url: str
) -> None:
    """New dates after `access_code_deleted`: a new code is created, the dead one not updated."""
    async with Rig(redis_url, one_lock()) as rig:
        _, dead = await failed_code_deleted(rig)
        later = rig.stay("B1", days_ahead=3, revision=3, action="update")
        assert (await rig.enqueue(later)).result == "enqueued"
        await rig.run()
        await assert_one_new_code(rig, dead)
        # r2's update only: the dead code is not updated
        assert rig.sandbox.stats()["requests"]["/access_codes/update"] == {"200": 1}


async def test_unchanged_resend_of_failed_stay_without_revision_is_duplicate(
    redis: Redis, redis_url: str
) -> None:
    """The same provision again without a revision leaves a failed stay failed (`duplicate`)."""
    async with Rig(redis_url, one_lock()) as rig:
        moved, _ = await failed_code_deleted(rig)
        unchanged = {k: v for k, v in moved.items() if k not in ("action", "revision")}
        resend = await rig.enqueue(unchanged)
        assert resend.result == "duplicate"
        assert (await rig.state("B1")).state is Phase.FAILED


async def test_duplicate_with_newer_revision_is_not_logged_accepted(
    redis: Redis, redis_url: str
) -> None:
    """A scheduled stay sent unchanged at a newer revision is `duplicate`, not change_accepted."""
    async with Rig(redis_url, one_lock()) as rig:
        stay = rig.stay("B1", revision=1)
        await rig.enqueue(stay)
        await rig.run()
        with capture_logs() as logs:
            assert (await rig.enqueue({**stay, "revision": 2})).result == "duplicate"
        assert [e for e in logs if e["event"] == "stay.change_accepted"] == []
        assert (await rig.state("B1")).revision == 2
