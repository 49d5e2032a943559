"""A stay goes in, a scheduled code comes out: real Redis, real arq workers, the sandbox."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.state import Phase, StayStore
from seam_sandbox import DeviceSpec, Fault, Latency, Scenario

pytestmark = pytest.mark.anyio


def devices(*specs: DeviceSpec) -> Scenario:
    return Scenario(devices=list(specs))


def lock(i: int, latency: float = 0.2, **kw: object) -> DeviceSpec:
    return DeviceSpec(id=f"lock-{i}", latency=Latency.fixed(latency), **kw)


async def test_happy_path_every_stay_scheduled_once(redis: Redis, redis_url: str) -> None:
    """Stays over several locks, two workers: each ends scheduled with exactly one code."""
    async with Rig(redis_url, devices(lock(1), lock(2), lock(3))) as rig:
        for i in range(9):
            assert (await rig.enqueue(rig.stay(f"B{i}", device=i % 3))).result == "enqueued"
        await rig.run(workers=2)
        for i in range(9):
            state = await rig.state(f"B{i}")
            assert state.state is Phase.SCHEDULED, state.failure
        stats = rig.sandbox.stats()
        assert sum(len(rig.sandbox.codes_on(d)) for d in rig.devices) == 9
        assert not stats["duplicate_names"]


async def test_outcome_on_results_stream_with_pin(redis: Redis, redis_url: str) -> None:
    """A scheduled stay writes one results entry carrying its PIN and code id."""
    async with Rig(redis_url, devices(lock(1))) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        entries = await rig.pool.xrange("codeprov:results")
        assert len(entries) == 1
        fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
        state = await rig.state("B1")
        assert fields["state"] == "scheduled"
        assert fields["access_code_id"] == state.access_code_id
        assert fields["code"] == rig.sandbox.codes_on("lock-1")[0]["code"]


async def test_status_contract_shape(redis: Redis, redis_url: str) -> None:
    """`status --json` has every contract field (later issues only add fields)."""
    async with Rig(redis_url, devices(lock(1))) as rig:
        await rig.enqueue(rig.stay("B1"))
        public = (await rig.state("B1")).public()
        assert set(public) >= {
            "booking_id",
            "device_id",
            "state",
            "access_code_id",
            "errors",
            "warnings",
            "failure",
            "updated_at",
        }
        assert public["state"] == "queued"


async def test_seed_shape_is_adopted_without_create(redis: Redis, redis_url: str) -> None:
    """A generate_code answer that is already an access code is polled, never created again."""
    scenario = Scenario(devices=[lock(1)], generate_code_shape="access_code")
    async with Rig(redis_url, scenario) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        assert "/access_codes/create" not in rig.sandbox.stats()["requests"]


async def test_duplicate_enqueue_is_a_noop(redis: Redis, redis_url: str) -> None:
    """The same stay twice: the second says duplicate, and the lock gets one code."""
    async with Rig(redis_url, devices(lock(1))) as rig:
        stay = rig.stay("B1")
        first = await rig.enqueue(stay)
        second = await rig.enqueue(stay)
        assert (first.result, second.result) == ("enqueued", "duplicate")
        await rig.run()
        assert (await rig.enqueue(stay)).result == "duplicate"
        assert len(rig.sandbox.codes_on("lock-1")) == 1


async def test_same_booking_other_details_is_invalid(redis: Redis, redis_url: str) -> None:
    """A known booking_id with other dates is refused with a reason, not silently merged."""
    async with Rig(redis_url, devices(lock(1))) as rig:
        await rig.enqueue(rig.stay("B1"))
        other = await rig.enqueue(rig.stay("B1", days_ahead=5))
        assert other.result == "invalid"
        assert "already enqueued with different" in (other.error or "")


async def test_deferred_creation_checks_at_scheduled_at(redis: Redis, redis_url: str) -> None:
    """A stay weeks out is checked when Seam said it will load the code, not polled meanwhile."""
    async with Rig(redis_url, devices(lock(1))) as rig:
        await rig.enqueue(rig.stay("B1", days_ahead=10))

        async def waiting() -> bool:
            return (await rig.state("B1")).state is Phase.WAITING

        await rig.run_until(waiting)
        state = await rig.state("B1")
        load_at = rig.now + timedelta(days=7)
        assert state.next_check_at is not None
        assert abs((state.next_check_at - load_at).total_seconds()) < 5
        gets = rig.sandbox.stats()["requests"].get("/access_codes/get", {})
        assert sum(gets.values()) == 0
        rig.sandbox.clock.advance(7 * 24 * 3600)
        assert await rig.make_due() == 1
        await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED


async def test_rerun_after_crash_adopts_existing_code(redis: Redis, redis_url: str) -> None:
    """A create that reached Seam but was never recorded is found by name, not made twice."""
    async with Rig(redis_url, devices(lock(1))) as rig:
        stay = rig.stay("B1")
        await rig.enqueue(stay)
        store = StayStore(rig.pool)
        state = await rig.state("B1")
        state.create_sent, state.state = True, Phase.PROVISIONING  # the intent was recorded
        assert await store.commit(state, expected_seq=0)
        async with httpx.AsyncClient(
            transport=rig.transport(),
            base_url="http://sandbox",
            headers={"Authorization": f"Bearer {rig.sandbox.api_key}"},
        ) as http:
            answer = await http.post(
                "/access_codes/create",
                json={
                    "device_id": "lock-1",
                    "code": "482913",
                    "name": "Stay B1",
                    "starts_at": stay["starts_at"],
                    "ends_at": stay["ends_at"],
                },
            )
            assert answer.status_code == 200
        created_id = answer.json()["access_code"]["access_code_id"]
        await rig.run()
        final = await rig.state("B1")
        assert final.state is Phase.SCHEDULED
        assert final.access_code_id == created_id
        assert len(rig.sandbox.codes_on("lock-1")) == 1


async def test_deadline_fails_not_scheduled_in_time(redis: Redis, redis_url: str) -> None:
    """A lock that never confirms ends the wait at the deadline with not_scheduled_in_time."""
    overrides = {"schedule_deadline": 0.5}
    async with Rig(redis_url, devices(lock(1, latency=3600)), overrides=overrides) as rig:
        await rig.enqueue({"booking_id": "B1", "device_id": "lock-1"})  # ongoing: deadline from now
        await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.FAILED
        assert state.failure is not None and state.failure.reason == "not_scheduled_in_time"


async def test_unknown_device_fails_with_reason(redis: Redis, redis_url: str) -> None:
    """A device Seam does not know ends the stay failed, naming the device problem."""
    async with Rig(redis_url, devices(lock(1))) as rig:
        await rig.enqueue({**rig.stay("B1"), "device_id": "no-such-lock"})
        await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.FAILED and state.failure is not None
        assert state.failure.reason == "device_not_found"


async def test_terminal_error_fails_stay(redis: Redis, redis_url: str) -> None:
    """A code error no retry can fix (no space on the lock) fails the stay with that code."""
    full = lock(1, faults=[Fault(kind="no_space_for_access_code_on_device", start=0)])
    async with Rig(redis_url, devices(full)) as rig:
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run()
        state = await rig.state("B1")
        assert state.failure is not None
        assert state.failure.reason == "no_space_for_access_code_on_device"
        added = [e for e in logs if e["event"] == "access_code.error.added"]
        assert [(e["error_code"], e["log_level"]) for e in added] == [
            ("no_space_for_access_code_on_device", "error")
        ]


async def test_transient_error_then_scheduled(redis: Redis, redis_url: str) -> None:
    """failed_to_set_on_device that clears: logged once when added, once when cleared."""
    flaky = lock(1, faults=[Fault(kind="failed_to_set_on_device", start=0, duration=0.6)])
    async with Rig(redis_url, devices(flaky)) as rig:
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run(workers=2)
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        events = [
            (e["event"], e.get("error_code"))
            for e in logs
            if e["event"].startswith("access_code.error")
        ]
        assert events == [
            ("access_code.error.added", "failed_to_set_on_device"),
            ("access_code.error.cleared", "failed_to_set_on_device"),
        ]
