"""Stay changes and cancellations: the code follows the stay, and dies with it."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from harness import Rig, run_cli
from redis.asyncio import Redis

from jobs.enqueue import cancel_stay
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Latency, Scenario, Slow

pytestmark = pytest.mark.anyio


def locks(n: int = 2, latency: float = 0.1, **kw: Any) -> Scenario:
    return Scenario(
        devices=[
            DeviceSpec(id=f"lock-{i}", latency=Latency.fixed(latency)) for i in range(1, n + 1)
        ],
        **kw,
    )


def live(rig: Rig, device: str) -> list[dict[str, Any]]:
    return rig.sandbox.codes_on(device)


async def results(rig: Rig) -> list[dict[str, str]]:
    entries = await rig.pool.xrange("codeprov:results")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_cancel_before_provisioning(redis: Redis, redis_url: str) -> None:
    """A cancel that lands before any worker ran means no code is ever created."""
    async with Rig(redis_url, locks()) as rig:
        await rig.enqueue(rig.stay("B1", revision=1))
        assert (await cancel_stay(rig.pool, "B1", revision=2)).result == "enqueued"
        await rig.run()
        assert (await rig.state("B1")).state is Phase.CANCELLED
        assert "/access_codes/create" not in rig.sandbox.stats()["requests"]


async def test_cancel_after_scheduled_removes_the_code(redis: Redis, redis_url: str) -> None:
    """Cancelling a scheduled stay deletes its code and records `cancelled` as an outcome."""
    async with Rig(redis_url, locks()) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        assert len(live(rig, "lock-1")) == 1
        await cancel_stay(rig.pool, "B1")
        await rig.run()
        assert (await rig.state("B1")).state is Phase.CANCELLED
        assert live(rig, "lock-1") == []
        assert [r["state"] for r in await results(rig)] == ["scheduled", "cancelled"]


async def test_cancel_during_create_leaves_no_orphan(redis: Redis, redis_url: str) -> None:
    """A cancel landing while a worker's create is in flight still removes that code."""
    slow_create = Slow(seconds=0.8, routes=["/access_codes/create"])
    async with Rig(redis_url, locks(slow=[slow_create])) as rig:
        await rig.enqueue(rig.stay("B1"))

        async def cancel_mid_create() -> None:
            while not (await rig.state("B1")).create_sent:
                await asyncio.sleep(0.01)
            await cancel_stay(rig.pool, "B1")  # the POST is still on its way

        async def cancelled() -> bool:
            return (await rig.state("B1")).state is Phase.CANCELLED

        canceller = asyncio.create_task(cancel_mid_create())
        await rig.run_until(cancelled)  # one worker throughout: it finishes the create first
        await canceller
        assert rig.sandbox.stats()["requests"]["/access_codes/create"] == {"200": 1}
        rig.sandbox.clock.advance(60)
        assert live(rig, "lock-1") == []


async def test_cancel_while_waiting_for_device(redis: Redis, redis_url: str) -> None:
    """A stay still being programmed is cancelled, and its code removed."""
    async with Rig(redis_url, locks(latency=2.0)) as rig:
        await rig.enqueue(rig.stay("B1"))

        async def waiting() -> bool:
            return (await rig.state("B1")).state is Phase.WAITING

        await rig.run_until(waiting)
        await cancel_stay(rig.pool, "B1")
        await rig.run()
        assert (await rig.state("B1")).state is Phase.CANCELLED
        assert live(rig, "lock-1") == []


async def test_dates_moved_updates_the_code(redis: Redis, redis_url: str) -> None:
    """An update with new dates changes the code's window and ends scheduled again."""
    async with Rig(redis_url, locks()) as rig:
        first = rig.stay("B1", revision=1)
        await rig.enqueue(first)
        await rig.run()
        moved = rig.stay("B1", days_ahead=2, revision=2, action="update")
        assert (await rig.enqueue(moved)).result == "enqueued"
        await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED
        [code] = live(rig, "lock-1")
        assert code["access_code_id"] == state.access_code_id
        assert state.stay.starts_at is not None
        assert code["starts_at"][:16] == state.stay.starts_at.isoformat()[:16]
        assert [r["state"] for r in await results(rig)] == ["scheduled", "scheduled"]
        assert "/access_codes/update" in rig.sandbox.stats()["requests"]


async def test_out_of_order_updates_keep_the_newest(redis: Redis, redis_url: str) -> None:
    """Revision 3 then revision 2: the older one is ignored, the window is revision 3's."""
    async with Rig(redis_url, locks()) as rig:
        await rig.enqueue(rig.stay("B1", revision=1))
        newest = rig.stay("B1", days_ahead=3, revision=3, action="update")
        older = rig.stay("B1", days_ahead=2, revision=2, action="update")
        assert (await rig.enqueue(newest)).result == "enqueued"
        stale = await rig.enqueue(older)
        assert stale.result == "duplicate" and "stale" in (stale.error or "")
        await rig.run()
        state = await rig.state("B1")
        assert state.revision == 3 and state.state is Phase.SCHEDULED
        assert state.stay.starts_at == newest_start(newest)


def newest_start(stay: dict[str, Any]) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(stay["starts_at"])


async def test_update_then_cancel(redis: Redis, redis_url: str) -> None:
    """An update followed by a cancel ends cancelled with no code left."""
    async with Rig(redis_url, locks()) as rig:
        await rig.enqueue(rig.stay("B1", revision=1))
        await rig.run()
        await rig.enqueue(rig.stay("B1", days_ahead=2, revision=2, action="update"))
        await rig.enqueue({"booking_id": "B1", "action": "cancel", "revision": 3})
        await rig.run()
        assert (await rig.state("B1")).state is Phase.CANCELLED
        assert live(rig, "lock-1") == []


async def test_moved_stay_leaves_one_code_on_the_new_lock(redis: Redis, redis_url: str) -> None:
    """A stay moved to another lock: old code deleted, one code on the new lock, both named."""
    async with Rig(redis_url, locks()) as rig:
        stay = rig.stay("B1", revision=1)
        await rig.enqueue(stay)
        await rig.run()
        [old] = live(rig, "lock-1")
        moved = {**stay, "device_id": "lock-2", "revision": 2, "action": "update"}
        assert (await rig.enqueue(moved)).result == "enqueued"
        await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED
        assert live(rig, "lock-1") == []
        assert len(live(rig, "lock-2")) == 1
        last = (await results(rig))[-1]
        assert last["device_id"] == "lock-2"
        assert last["previous_device_id"] == "lock-1"
        assert last["previous_access_code_id"] == old["access_code_id"]


async def test_killed_between_delete_and_record(redis: Redis, redis_url: str) -> None:
    """A delete that reached Seam but was never recorded is simply confirmed gone later."""
    async with Rig(redis_url, locks()) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        state = await rig.state("B1")
        await cancel_stay(rig.pool, "B1")
        # The worker that would have recorded it died; the delete itself reached Seam.
        client = rig.transport()
        import httpx

        async with httpx.AsyncClient(
            transport=client,
            base_url="http://sandbox",
            headers={"Authorization": f"Bearer {rig.sandbox.api_key}"},
        ) as http:
            answer = await http.post(
                "/access_codes/delete", json={"access_code_id": state.access_code_id}
            )
            assert answer.status_code == 200
        rig.sandbox.clock.advance(60)
        await rig.run()
        assert (await rig.state("B1")).state is Phase.CANCELLED
        assert live(rig, "lock-1") == []


async def test_cancel_of_unknown_booking_blocks_late_provision(
    redis: Redis, redis_url: str
) -> None:
    """A cancel delivered before its provision: the late provision is ignored."""
    async with Rig(redis_url, locks()) as rig:
        assert (await cancel_stay(rig.pool, "B1", revision=5)).result == "enqueued"
        late = await rig.enqueue(rig.stay("B1", revision=4))
        assert late.result == "duplicate"
        await rig.run()
        assert await rig.pool.get("codeprov:stay:B1") is None
        assert "/access_codes/create" not in rig.sandbox.stats()["requests"]


async def test_update_for_unknown_booking_provisions(redis: Redis, redis_url: str) -> None:
    """An update that arrives first provisions the stay; the older provision is then stale."""
    async with Rig(redis_url, locks()) as rig:
        update = rig.stay("B1", days_ahead=2, revision=2, action="update")
        assert (await rig.enqueue(update)).result == "enqueued"
        assert (await rig.enqueue(rig.stay("B1", revision=1))).result == "duplicate"
        await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        assert len(live(rig, "lock-1")) == 1


async def test_expired_code_404_on_cancel_is_gone(redis: Redis, redis_url: str) -> None:
    """Cancelling after the stay ended: Seam already removed the code; that is not a failure."""
    async with Rig(redis_url, locks()) as rig:
        await rig.enqueue(rig.stay("B1", days_ahead=0.01, nights=0.02))
        await rig.run()
        rig.sandbox.clock.advance(timedelta(days=1).total_seconds())
        await cancel_stay(rig.pool, "B1")
        await rig.run()
        assert (await rig.state("B1")).state is Phase.CANCELLED


async def test_cli_cancel_and_status(redis: Redis, redis_url: str) -> None:
    """`codeprov cancel` and `enqueue --action cancel` answer in JSON; status shows the window."""
    enqueue = ("enqueue", "--booking-id", "B1", "--device-id", "lock-1", "--revision", "1")
    assert json.loads(run_cli(redis_url, *enqueue).stdout)["result"] == "enqueued"
    status = json.loads(run_cli(redis_url, "status", "B1", "--json").stdout)
    assert (status["revision"], status["starts_at"], status["state"]) == (1, None, "queued")
    cancelled = run_cli(redis_url, "cancel", "B1", "--revision", "2")
    assert cancelled.returncode == 0
    assert json.loads(cancelled.stdout)["result"] == "enqueued"
    again = run_cli(redis_url, "enqueue", "--booking-id", "B1", "--action", "cancel")
    assert json.loads(again.stdout) == {
        "booking_id": "B1",
        "job_id": "codeprov:B1:1",
        "result": "duplicate",
        "error": "already cancelled",
    }
    status = json.loads(run_cli(redis_url, "status", "B1", "--json").stdout)
    assert status["pending_action"] == "cancel"
