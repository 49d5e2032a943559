"""Multi-lock stays on the intake stream: `device_ids` comma-separated, through a running worker."""

from __future__ import annotations

from typing import Any

import pytest
from harness import Rig
from redis.asyncio import Redis

from jobs.intake import GROUP
from jobs.status import read_status
from seam_sandbox import DeviceSpec, Latency, Scenario

pytestmark = pytest.mark.anyio
KEY, DEAD = "codeprov:intake", "codeprov:intake:dead"
LOCKS = [f"lock-{n}" for n in range(1, 4)]


def three_locks() -> Scenario:
    return Scenario(devices=[DeviceSpec(id=d, latency=Latency.fixed(0.1)) for d in LOCKS])


def entry(rig: Rig, booking_id: str, device_ids: str) -> dict[Any, Any]:
    """An intake entry as a booking system writes it: flat strings, no device_id."""
    stay = rig.stay(booking_id)
    stay.pop("device_id")
    return {k: str(v) for k, v in stay.items()} | {"device_ids": device_ids}


async def scheduled(rig: Rig, booking_id: str) -> bool:
    found = await read_status(rig.settings, booking_id)
    return found is not None and found["state"] == "scheduled"


async def results(redis: Redis) -> list[dict[str, str]]:
    entries = await redis.xrange("codeprov:results")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_xadd_of_two_locks_is_scheduled_on_both_with_one_pin(
    redis: Redis, redis_url: str
) -> None:
    """`XADD codeprov:intake ... device_ids "lock-1,lock-2"` taken in by a running worker: one
    code on each lock, the same PIN, status `locks` both scheduled, one results entry."""
    async with Rig(redis_url, three_locks()) as rig:
        await redis.xadd(KEY, entry(rig, "B1", "lock-1,lock-2"))
        await rig.run_until(lambda: scheduled(rig, "B1"))
        pins = {d: [c["code"] for c in rig.sandbox.codes_on(d)] for d in LOCKS}
        assert len(pins["lock-1"]) == 1 and pins["lock-2"] == pins["lock-1"]
        assert pins["lock-3"] == []
        view = await read_status(rig.settings, "B1")
        assert view is not None
        assert [(lock["device_id"], lock["state"]) for lock in view["locks"]] == [
            ("lock-1", "scheduled"), ("lock-2", "scheduled")]
        [told] = await results(redis)
        assert told["state"] == "scheduled" and told["code"] == pins["lock-1"][0]
        assert told["device_ids"] == "lock-1,lock-2"
        assert (await redis.xpending(KEY, GROUP))["pending"] == 0


async def test_bad_device_ids_are_dead_lettered_and_the_next_entry_goes_through(
    redis: Redis, redis_url: str
) -> None:
    """Entries whose device_ids repeat a lock or name 11 are dead-lettered with the reason; the
    multi-lock entry behind them is scheduled on its locks by the same worker."""
    async with Rig(redis_url, three_locks()) as rig:
        eleven = ",".join(f"lock-{n}" for n in range(1, 12))
        await redis.xadd(KEY, entry(rig, "twice", "lock-1,lock-1"))
        await redis.xadd(KEY, entry(rig, "eleven", eleven))
        await redis.xadd(KEY, entry(rig, "good", "lock-2,lock-3"))
        await rig.run_until(lambda: scheduled(rig, "good"))
        dead = await redis.xrange(DEAD)
        assert [fields[b"field:booking_id"] for _, fields in dead] == [b"twice", b"eleven"]
        assert [fields[b"reason"].decode() for _, fields in dead] == [
            "stay: device_ids: each lock once", "stay: device_ids: at most 10 locks per stay"]
        assert dead[1][1][b"field:device_ids"] == eleven.encode()
        assert await read_status(rig.settings, "twice") is None
        assert await read_status(rig.settings, "eleven") is None
        assert rig.sandbox.codes_on("lock-1") == []
        assert [len(rig.sandbox.codes_on(d)) for d in ("lock-2", "lock-3")] == [1, 1]
        assert (await redis.xpending(KEY, GROUP))["pending"] == 0
