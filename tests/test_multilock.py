"""jobs/group.py: a stay with several locks gets one PIN on every lock and one outcome."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import Rig, run_cli
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.enqueue import _decide, cancel_stay
from jobs.payload import parse_message
from jobs.state import Phase, StayStore, part_id
from jobs.status import read_status
from seam_sandbox import DeviceSpec, Fault, Latency, Scenario
from worker.errors import InvalidInput

pytestmark = pytest.mark.anyio

LOCKS = ["lock-1", "lock-2", "lock-3", "lock-4"]


def scenario(**per_lock: dict[str, Any]) -> Scenario:
    return Scenario(devices=[
        DeviceSpec(id=d, latency=Latency.fixed(0.1), **per_lock.get(d.replace("-", "_"), {}))
        for d in LOCKS
    ])


def multi(rig: Rig, locks: list[str], **extra: Any) -> dict[str, Any]:
    stay = rig.stay("B1", **extra)
    stay.pop("device_id")
    return stay | {"device_ids": locks}


async def results(redis: Redis) -> list[dict[str, str]]:
    entries = await redis.xrange("codeprov:results")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def status(rig: Rig) -> dict[str, Any]:
    found = await read_status(rig.settings, "B1")
    assert found is not None
    return found


def requests(rig: Rig, route: str) -> int:
    return sum(rig.sandbox.stats()["requests"].get(route, {}).values())


async def test_three_locks_one_pin(redis: Redis, redis_url: str) -> None:
    """Three locks: one code on each, the same PIN, one generate_code, status `locks` all
    scheduled, and one results entry with that `code`."""
    async with Rig(redis_url, scenario()) as rig:
        assert (await rig.enqueue(multi(rig, LOCKS[:3]))).result == "enqueued"
        await rig.run()
        pins = {d: [c["code"] for c in rig.sandbox.codes_on(d)] for d in LOCKS[:3]}
        assert all(len(p) == 1 for p in pins.values()) and len({p[0] for p in pins.values()}) == 1
        assert requests(rig, "/access_codes/generate_code") == 1
        view = await status(rig)
        assert view["state"] == "scheduled" and view["device_id"] == "lock-1"
        assert [(lock["device_id"], lock["state"]) for lock in view["locks"]] == [
            (d, "scheduled") for d in LOCKS[:3]]
        [entry] = await results(redis)
        assert entry["state"] == "scheduled" and entry["code"] == pins["lock-1"][0]
        assert entry["device_ids"] == "lock-1,lock-2,lock-3" and "codes" not in entry


async def test_lock_refusing_the_pin_gets_its_own(redis: Redis, redis_url: str) -> None:
    """A lock that takes no PIN of the first lock's length gets a PIN of its own: the results
    entry carries `codes` (lock -> PIN) instead of one `code`."""
    six_only = {"code_length": 6, "supported_code_lengths": [6]}
    four = {"code_length": 4}
    async with Rig(redis_url, scenario(lock_1=four, lock_2=six_only)) as rig:
        with capture_logs() as logs:
            assert (await rig.enqueue(multi(rig, LOCKS[:2]))).result == "enqueued"
            await rig.run()
        [entry] = await results(redis)
        assert entry["state"] == "scheduled" and "code" not in entry
        codes = json.loads(entry["codes"])
        assert set(codes) == {"lock-1", "lock-2"} and len(codes["lock-1"]) == 4
        assert len(codes["lock-2"]) == 6
        assert [c["code"] for c in rig.sandbox.codes_on("lock-2")] == [codes["lock-2"]]
        conflicts = [e for e in logs if e["event"] == "access_code.pin_conflict"]
        assert len(conflicts) == 1 and conflicts[0]["shared_pin"] is True


async def test_one_lock_failing_fails_the_stay_naming_it(redis: Redis, redis_url: str) -> None:
    """A lock whose code fails for good fails the stay; the failure names that lock."""
    no_space = Fault(kind="terminal_error", error_code="no_space_for_access_code_on_device")
    full = {"faults": [no_space]}
    async with Rig(redis_url, scenario(lock_3=full)) as rig:
        assert (await rig.enqueue(multi(rig, LOCKS[:3]))).result == "enqueued"
        await rig.run()
        view = await status(rig)
        assert view["state"] == "failed" and view["failure"]["message"].startswith("lock lock-3:")
        told = await results(redis)
        assert [e["state"] for e in told] == ["failed"]
        assert told[0]["failure_reason"] == "no_space_for_access_code_on_device"


async def test_update_adds_and_removes_locks(redis: Redis, redis_url: str) -> None:
    """An update from locks 1,2 to 1,3: lock 2's code is removed, lock 3 gets the stay's PIN."""
    async with Rig(redis_url, scenario()) as rig:
        assert (await rig.enqueue(multi(rig, LOCKS[:2], revision=1))).result == "enqueued"
        await rig.run()
        pin = rig.sandbox.codes_on("lock-1")[0]["code"]
        moved = multi(rig, ["lock-1", "lock-3"], revision=2, action="update")
        assert (await rig.enqueue(moved)).result == "enqueued"
        await rig.run()
        assert rig.sandbox.codes_on("lock-2") == []
        assert [c["code"] for c in rig.sandbox.codes_on("lock-3")] == [pin]
        assert [c["code"] for c in rig.sandbox.codes_on("lock-1")] == [pin]
        view = await status(rig)
        assert [lock["device_id"] for lock in view["locks"]] == ["lock-1", "lock-3"]
        told = await results(redis)
        assert [e["state"] for e in told] == ["scheduled", "scheduled"]
        assert told[1]["device_ids"] == "lock-1,lock-3" and told[1]["code"] == pin
        gone = await StayStore(rig.pool).get(part_id("B1", "lock-2"))
        assert gone is not None and gone.state is Phase.CANCELLED


async def test_cancel_removes_every_code(redis: Redis, redis_url: str) -> None:
    """A cancelled stay of three locks leaves no code on any; it is told `cancelled` once."""
    async with Rig(redis_url, scenario()) as rig:
        assert (await rig.enqueue(multi(rig, LOCKS[:3]))).result == "enqueued"
        await rig.run()
        assert (await cancel_stay(rig.pool, "B1", now=rig.now)).result == "enqueued"
        await rig.run()
        assert all(rig.sandbox.codes_on(d) == [] for d in LOCKS[:3])
        assert (await status(rig))["state"] == "cancelled"
        assert [e["state"] for e in await results(redis)] == ["scheduled", "cancelled"]


def test_device_ids_as_the_intake_sends_them() -> None:
    """On the intake stream `device_ids` is comma-separated: the stay has those locks."""
    message = parse_message({"booking_id": "B1", "device_ids": "lock-1, lock-2,lock-3"})
    assert message.stay is not None and message.stay.locks == ("lock-1", "lock-2", "lock-3")


@pytest.mark.parametrize(
    ("device_ids", "why"),
    [
        (["lock-1", "lock-1"], "each lock once"),
        ([f"lock-{i}" for i in range(11)], "at most 10"),
        ([], "a list of 1 to 10"),
        ("lock-1,,lock-2", "empty device id"),
    ],
)
def test_bad_device_ids_are_invalid(device_ids: Any, why: str) -> None:
    """Repeated locks, more than 10, none, or an empty id: invalid input saying which."""
    with pytest.raises(InvalidInput, match=why):
        parse_message({"booking_id": "B1", "device_ids": device_ids})


def test_device_id_and_other_device_ids_are_invalid() -> None:
    """device_id and device_ids naming another first lock: invalid (give one of the two)."""
    with pytest.raises(InvalidInput, match="not both"):
        parse_message({"booking_id": "B1", "device_id": "lock-9", "device_ids": ["lock-1", "x"]})


async def test_cli_repeated_device_id(redis: Redis, redis_url: str) -> None:
    """`codeprov enqueue --device-id A --device-id B` enqueues one stay of two locks."""
    done = run_cli(redis_url, "enqueue", "--booking-id", "B1", "--device-id", "lock-1",
                   "--device-id", "lock-2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == "enqueued"
    stored = await StayStore(redis).get("B1")
    assert stored is not None and stored.stay.locks == ("lock-1", "lock-2")
    assert await StayStore(redis).get(part_id("B1", "lock-2")) is not None


async def test_removed_lock_is_cancelled_when_the_update_is_sent_again(
    redis: Redis, redis_url: str
) -> None:
    """An update removing a lock that crashed after the booking's record was written (its part
    not yet cancelled) removes that lock's code when it is sent again."""
    async with Rig(redis_url, scenario()) as rig:
        assert (await rig.enqueue(multi(rig, LOCKS[:3], revision=1))).result == "enqueued"
        await rig.run()
        fewer = multi(rig, LOCKS[:2], revision=2, action="update")
        message = parse_message(fewer, now=rig.now)
        await _decide(rig.pool, message, "codeprov", rig.now)  # the booking's write, then a crash
        part = await StayStore(rig.pool).get(part_id("B1", "lock-3"))
        assert part is not None and not part.cancel_requested
        assert (await rig.enqueue(fewer)).result == "duplicate"  # sent again
        await rig.run()
        assert rig.sandbox.codes_on("lock-3") == []
        assert [lock["device_id"] for lock in (await status(rig))["locks"]] == LOCKS[:2]


@pytest.mark.parametrize("ids", [["lock-1", " lock-1"], "lock-1, lock-1 "])
def test_a_lock_given_twice_with_spaces_is_invalid(ids: Any) -> None:
    """A lock given twice, once with spaces around it, is one lock given twice: invalid."""
    with pytest.raises(InvalidInput, match="each lock once"):
        parse_message({"booking_id": "B1", "device_ids": ids})


def test_an_empty_device_id_is_named() -> None:
    """An empty id in device_ids (two commas, one at the end) says so."""
    for ids in ("lock-1,", "lock-1,,lock-2", ""):
        with pytest.raises(InvalidInput, match="empty device id"):
            parse_message({"booking_id": "B1", "device_ids": ids})
