"""What a step promises whatever races it: committed events logged once, lost steps re-queued."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

import pytest
from harness import Rig
from pydantic import SecretStr
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.state import Phase
from seam_sandbox import DeviceSpec, Fault, Latency, Scenario, Slow
from worker.queue import enqueue_step, job_id

pytestmark = pytest.mark.anyio

Logs = list[MutableMapping[str, Any]]


def locks(**kw: Any) -> Scenario:
    devices = [DeviceSpec(id=f"lock-{i}", latency=Latency.fixed(0.1)) for i in (1, 2)]
    return Scenario(devices=devices, **kw)


def named(logs: Logs, event: str) -> Logs:
    return [e for e in logs if e["event"] == event]


async def change_during_create(rig: Rig, booking: str, change: dict[str, Any]) -> None:
    """Run one worker; once a create's intent for the change's lock is stored, enqueue `change`."""

    async def intent_stored() -> bool:
        asked = (await rig.state(booking)).requested  # set by the intent, cleared on adoption
        return asked is not None and asked.device_id == change["device_id"]

    async def change_mid_create() -> None:
        while not await intent_stored():
            await asyncio.sleep(0.01)
        assert (await rig.enqueue(change)).result == "enqueued"

    async def scheduled() -> bool:
        state = await rig.state(booking)
        return state.state is Phase.SCHEDULED and state.revision == change["revision"]

    changer = asyncio.create_task(change_mid_create())
    await rig.run_until(scheduled)
    await changer


async def test_move_committed_with_the_create_intent_is_logged_once(
    redis: Redis, redis_url: str
) -> None:
    """A move stored with the create's intent logs access_code.moved once, though superseded."""
    slow = Slow(seconds=0.8, routes=["/access_codes/create"])
    async with Rig(redis_url, locks(slow=[slow])) as rig:
        stay = rig.stay("B1", revision=1)
        await rig.enqueue(stay)
        await rig.run()
        moved = {**stay, "device_id": "lock-2", "revision": 2, "action": "update"}
        assert (await rig.enqueue(moved)).result == "enqueued"
        later = rig.stay("B1", days_ahead=2, revision=3, action="update")
        with capture_logs() as logs:
            await change_during_create(rig, "B1", {**later, "device_id": "lock-2"})
    assert len(named(logs, "step.superseded")) == 1  # the step that moved the code lost
    [move] = named(logs, "access_code.moved")
    assert (move["from_device_id"], move["to_device_id"]) == ("lock-1", "lock-2")


async def test_superseded_step_logs_nothing_of_its_own(redis: Redis, redis_url: str) -> None:
    """A step whose commit loses to a change logs none of its queued events (no created)."""
    slow = Slow(seconds=0.8, routes=["/access_codes/create"])
    async with Rig(redis_url, locks(slow=[slow])) as rig:
        await rig.enqueue(rig.stay("B1", revision=1))
        with capture_logs() as logs:
            await change_during_create(
                rig, "B1", rig.stay("B1", days_ahead=2, revision=2, action="update")
            )
    [lost] = named(logs, "step.superseded")
    assert lost["job_id"] == job_id("B1", 0, prefix="codeprov")
    assert [e["event"] for e in logs if e.get("job_id") == lost["job_id"]] == ["step.superseded"]
    [created] = named(logs, "access_code.created")  # logged by the step that adopted it
    assert created["adopted"] is True and created["job_id"] != lost["job_id"]


async def test_stale_step_requeues_the_step_the_record_expects(
    redis: Redis, redis_url: str
) -> None:
    """Step 1's job lost, a stale job 0 runs: it queues step 1 and the stay is scheduled."""
    async with Rig(redis_url, locks()) as rig:
        await rig.enqueue(rig.stay("B1", revision=1))
        await rig.enqueue(rig.stay("B1", days_ahead=2, revision=2, action="update"))
        lost = job_id("B1", 1, prefix="codeprov")
        assert await rig.pool.zrem(rig.settings.queue_name, lost) == 1
        await rig.pool.delete(f"arq:job:{lost}")
        # Job 0 still queued: it was running when the update came (a change drops a queued one)
        await enqueue_step(rig.pool, "B1", 0, prefix="codeprov")
        await rig.run()
        state = await rig.state("B1")
    assert (state.state, state.revision) == (Phase.SCHEDULED, 2)


async def test_failed_stays_results_carry_no_pin(redis: Redis, redis_url: str) -> None:
    """A stay that failed holding a PIN (never scheduled) has no `code` in its results entry."""
    offline = Fault(kind="device_offline", start=0, duration=3600)
    scenario = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1),
                                            faults=[offline])])
    async with Rig(redis_url, scenario, overrides={"schedule_deadline": 0.5}) as rig:
        await rig.enqueue({"booking_id": "B1", "device_id": "lock-1"})  # deadline: from now
        await rig.run()
        state = await rig.state("B1")
        entries = await rig.pool.xrange("codeprov:results")
    assert state.state is Phase.FAILED and state.code  # the PIN is known: it was sent
    [(_, fields)] = entries
    assert fields[b"state"] == b"failed" and b"code" not in fields


async def test_cancelled_stays_results_carry_no_pin(redis: Redis, redis_url: str) -> None:
    """A cancelled stay's results entry has no `code` field."""
    async with Rig(redis_url, locks()) as rig:
        await rig.enqueue(rig.stay("B1", revision=1))
        await rig.run()
        await rig.enqueue({"booking_id": "B1", "action": "cancel", "revision": 2})
        await rig.run()
        entries = await rig.pool.xrange("codeprov:results")
    assert [f[b"state"] for _, f in entries] == [b"scheduled", b"cancelled"]
    assert b"code" in entries[0][1] and b"code" not in entries[1][1]


async def test_stay_still_waiting_at_its_end_fails_expired(redis: Redis, redis_url: str) -> None:
    """A stay not final when its ends_at passes (key refused, far deadline) fails `expired`."""
    async with Rig(redis_url, locks(), overrides={"schedule_deadline": 7 * 86400}) as rig:
        rig.settings = rig.settings.model_copy(update={"seam_api_key": SecretStr("revoked")})
        await rig.enqueue(rig.stay("B1", days_ahead=0.5, nights=1))

        async def waiting() -> bool:
            return (await rig.state("B1")).transient_failures >= 1

        await rig.run_until(waiting)
        rig.sandbox.clock.advance(timedelta(days=2).total_seconds())  # past its ends_at
        await rig.make_due()
        await rig.run(timeout=10)
        state = await rig.state("B1")
    assert state.state is Phase.FAILED and state.failure is not None
    assert state.failure.reason == "expired"
