"""Removing a cancelled stay's code: a deadline, a warning on the way, its errors logged."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.enqueue import cancel_stay
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Fault, Latency, Scenario

pytestmark = pytest.mark.anyio

Logs = list[MutableMapping[str, Any]]
DEADLINE = 1.0  # CODEPROV_SCHEDULE_DEADLINE: also the removal's, counted from the cancel


def lock_offline_from(start: float) -> Scenario:
    """lock-1 programs in 0.1 s, then goes offline for an hour from `start`: no delete lands."""
    offline = Fault(kind="device_offline", start=start, duration=3600)
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1),
                                        faults=[offline])])


def named(logs: Logs, event: str) -> Logs:
    return [e for e in logs if e["event"] == event]


async def cancel_while_offline(rig: Rig) -> str | None:
    """B1 scheduled on lock-1, the lock goes offline, B1 is cancelled: its code id."""
    await rig.enqueue(rig.stay("B1"))
    await rig.run()
    code_id = (await rig.state("B1")).access_code_id
    rig.sandbox.clock.advance(5.0)  # the lock is offline from here on
    await cancel_stay(rig.pool, "B1", now=rig.now)
    return code_id


async def test_unconfirmed_removal_fails_not_removed_in_time(
    redis: Redis, redis_url: str
) -> None:
    """A delete the lock never confirms: failed not_removed_in_time naming the code, no polling."""
    async with Rig(redis_url, lock_offline_from(5.0),
                   overrides={"schedule_deadline": DEADLINE}) as rig:
        code_id = await cancel_while_offline(rig)
        await rig.run(timeout=15)  # burst: returns once nothing is queued any more
        state = await rig.state("B1")
        queued = await rig.pool.zcard(rig.settings.queue_name)
        [*_, (_, last)] = await rig.pool.xrange("codeprov:results")
    assert code_id is not None and state.state is Phase.FAILED and state.failure is not None
    assert queued == 0  # final: no check left
    assert state.failure.reason == "not_removed_in_time"
    assert f"{code_id} on lock-1" in state.failure.message
    assert "device_offline" in state.failure.message
    assert (last[b"state"], last[b"failure_reason"]) == (b"failed", b"not_removed_in_time")
    assert last[b"action"] == b"cancel"
    assert rig.sandbox.codes_on("lock-1") != []  # it is still there: the failure says so


async def test_unconfirmed_removal_logs_its_errors_and_warns_once(
    redis: Redis, redis_url: str
) -> None:
    """While removing: error.added once for the lock's error, one removal_at_risk before failing."""
    async with Rig(redis_url, lock_offline_from(5.0),
                   overrides={"schedule_deadline": DEADLINE}) as rig:
        code_id = await cancel_while_offline(rig)
        with capture_logs() as logs:
            await rig.run(timeout=15)
    [added] = named(logs, "access_code.error.added")
    assert (added["error_code"], added["access_code_id"]) == ("device_offline", code_id)
    [risk] = named(logs, "provisioning.removal_at_risk")
    assert risk["access_code_ids"] == [code_id] and risk["errors"] == ["device_offline"]
    events = [e["event"] for e in logs]
    assert events.index("provisioning.removal_at_risk") < events.index("provisioning.failed")


async def test_removal_confirmed_in_time_is_cancelled(redis: Redis, redis_url: str) -> None:
    """A lock back online before the removal deadline: the stay ends cancelled, code gone."""
    async with Rig(redis_url, lock_offline_from(3600.0),
                   overrides={"schedule_deadline": 30.0}) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        await cancel_stay(rig.pool, "B1", now=rig.now)
        await rig.run()
        state = await rig.state("B1")
    assert state.state is Phase.CANCELLED and rig.sandbox.codes_on("lock-1") == []


async def test_a_failed_removal_is_tried_again_by_a_new_cancel(
    redis: Redis, redis_url: str
) -> None:
    """After not_removed_in_time, cancelling again sends the DELETE again and ends cancelled."""
    async with Rig(redis_url, lock_offline_from(5.0),
                   overrides={"schedule_deadline": DEADLINE}) as rig:
        await cancel_while_offline(rig)
        await rig.run(timeout=15)
        assert (await rig.state("B1")).state is Phase.FAILED
        deletes_before = deletes(rig)
        rig.sandbox.clock.advance(3600)  # the lock is back online
        again = await cancel_stay(rig.pool, "B1", now=rig.now)
        await rig.run(timeout=15)
        state = await rig.state("B1")
    assert again.result == "enqueued"
    assert state.state is Phase.CANCELLED
    assert rig.sandbox.codes_on("lock-1") == []
    assert deletes(rig) == deletes_before + 1  # sent again: the first may have been lost


def deletes(rig: Rig) -> int:
    """How many /access_codes/delete requests the sandbox answered."""
    return sum(rig.sandbox.stats()["requests"].get("/access_codes/delete", {}).values())
