"""Backup codes: a code that will not set hands the guest a backup PIN from the lock's pool."""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping
from datetime import datetime
from typing import Any

import httpx
import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.enqueue import cancel_stay
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Fault, Latency, Scenario

pytestmark = pytest.mark.anyio

PULL = "/access_codes/pull_backup_access_code"
CREATE = "/access_codes/create"
ON = {"backup_codes": True}
Sent = list[tuple[str, dict[str, Any]]]


def lock(*faults: Fault, latency: float = 0.2, **kw: Any) -> Scenario:
    spec = DeviceSpec(id="lock-1", latency=Latency.fixed(latency), faults=list(faults), **kw)
    return Scenario(devices=[spec])


def failing(duration: float = 3600) -> Fault:
    return Fault(kind="failed_to_set_on_device", start=0, duration=duration)


class Recorder(httpx.AsyncBaseTransport):
    """The sandbox, with each request's route and JSON body kept in `sent` (shared by every
    worker's transport); `lose` names routes whose first answer is lost after it took effect."""

    def __init__(self, inner: httpx.AsyncBaseTransport, sent: Sent, lose: set[str]) -> None:
        self.inner, self.sent, self.lose = inner, sent, lose

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.sent.append((path, json.loads(request.content or b"{}")))
        response = await self.inner.handle_async_request(request)
        if path in self.lose:
            self.lose.discard(path)
            await response.aread()
            raise httpx.ReadError("connection reset after the request", request=request)
        return response


def recording(
    sent: Sent, lose: frozenset[str] = frozenset()
) -> Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]:
    pending = set(lose)
    return lambda inner: Recorder(inner, sent, pending)


class OneKey(httpx.AsyncBaseTransport):
    """The sandbox answering a pull under one key only: `backup_access_code` (Seam's docs, its
    fake) or `access_code` (what Seam's SDKs read)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, key: str) -> None:
        self.inner, self.key = inner, key

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != PULL or response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        kept = {"ok": True, self.key: body[self.key]}
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(200, headers=headers, content=json.dumps(kept).encode())


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def creates(sent: Sent) -> list[dict[str, Any]]:
    return [body for path, body in sent if path == CREATE]


async def test_failed_to_set_pulls_backup_and_reports_its_pin(
    redis: Redis, redis_url: str
) -> None:
    """failed_to_set_on_device with a backup available: the backup is pulled, the stay is
    scheduled with the backup's id and PIN, `backup` in status and results, logged once masked."""
    sent: Sent = []
    async with Rig(redis_url, lock(failing()), overrides=ON, wrap=recording(sent)) as rig:
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run()
        state = await rig.state("B1")
        [backup] = [c for c in rig.sandbox.codes_on("lock-1") if c["is_backup"]]
        assert state.state is Phase.SCHEDULED
        assert (state.access_code_id, state.code) == (backup["access_code_id"], backup["code"])
        assert state.public()["backup"] is True
        assert [b.get("use_backup_access_code_pool") for b in creates(sent)] == [True]
        [entry] = await rig.pool.xrange("codeprov:results")
        fields = {k.decode(): v.decode() for k, v in entry[1].items()}
        assert (fields["backup"], fields["code"]) == ("true", backup["code"])
        [pulled] = events(logs, "access_code.backup_pulled")
        assert pulled["reason"] == "failed_to_set_on_device"
        assert pulled["code"] == "****" + backup["code"][-2:]
        assert not events(logs, "access_code.scheduled")


async def test_at_risk_pulls_backup_before_starts_at(redis: Redis, redis_url: str) -> None:
    """A code still not on the lock AT_RISK_MARGIN before starts_at gets a backup pulled then,
    instead of `provisioning.at_risk`."""
    overrides = {**ON, "at_risk_margin": 3600}
    async with Rig(redis_url, lock(latency=7200), overrides=overrides) as rig:
        await rig.enqueue(rig.stay("B1", days_ahead=(3600 + 1.5) / 86400))
        with capture_logs() as logs:
            await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED and state.backup
        [pulled] = events(logs, "access_code.backup_pulled")
        assert pulled["reason"] == "at_risk"
        assert not events(logs, "provisioning.at_risk")


async def test_pull_retried_after_lost_answer_gives_same_backup_logged_once(
    redis: Redis, redis_url: str
) -> None:
    """A pull whose answer is lost is sent again: Seam gives the same backup, one is taken
    from the pool, `access_code.backup_pulled` is logged once, and the original's
    `using_backup_access_code` seen meanwhile is logged at info (expected, not an alert)."""
    sent: Sent = []
    wrap = recording(sent, lose=frozenset({PULL}))
    async with Rig(redis_url, lock(failing()), overrides=ON, wrap=wrap) as rig:
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run()
        state = await rig.state("B1")
        backups = [c for c in rig.sandbox.codes_on("lock-1") if c["is_backup"]]
        assert [p for p, _ in sent if p == PULL] == [PULL, PULL]
        assert [c["access_code_id"] for c in backups] == [state.access_code_id]
        assert state.state is Phase.SCHEDULED
        assert len(events(logs, "access_code.backup_pulled")) == 1
        [using] = events(logs, "access_code.warning.added")
        assert (using["warning_code"], using["log_level"]) == ("using_backup_access_code", "info")


async def test_empty_pool_is_logged_once_and_the_stay_goes_on(
    redis: Redis, redis_url: str
) -> None:
    """A lock whose pool is empty: no backup, `access_code.backup_unavailable` once, and the
    stay is scheduled by its own code once the failure clears."""
    scenario = lock(failing(duration=1.0), backup_pool_size=0)
    async with Rig(redis_url, scenario, overrides=ON) as rig:
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED and not state.backup
        assert not any(c["is_backup"] for c in rig.sandbox.codes_on("lock-1"))
        [unavailable] = events(logs, "access_code.backup_unavailable")
        assert unavailable["reason"] == "empty_backup_access_code_pool"
        assert not events(logs, "access_code.backup_pulled")


async def waited(rig: Rig, looks: int, booking_id: str = "B1") -> None:
    """Run a worker until the stay has been looked at `looks` times."""

    async def seen() -> bool:
        return (await rig.state(booking_id)).checks >= looks

    await rig.run_until(seen)


async def test_backup_off_sends_no_pool_and_pulls_nothing(redis: Redis, redis_url: str) -> None:
    """CODEPROV_BACKUP_CODES off (the default): no device read, no pool asked on create, no pull
    while the code fails to set."""
    sent: Sent = []
    async with Rig(redis_url, lock(failing()), wrap=recording(sent)) as rig:
        await rig.enqueue(rig.stay("B1"))
        await waited(rig, looks=4)
        state = await rig.state("B1")
        assert "failed_to_set_on_device" in state.errors
        assert state.state is Phase.WAITING and not state.public()["backup"]
        assert [b.get("use_backup_access_code_pool") for b in creates(sent)] == [None]
        assert not {PULL, "/devices/get"} & {p for p, _ in sent}


async def test_lock_without_pool_support_gets_no_pool_and_no_pull(
    redis: Redis, redis_url: str
) -> None:
    """Backup codes on, a lock without `supports_backup_access_code_pool`: the device is read
    once for two stays one after the other (cached), neither create asks for the pool, nothing
    is pulled."""
    sent: Sent = []
    scenario = lock(failing(), supports_backup_access_code_pool=False)
    async with Rig(redis_url, scenario, overrides=ON, wrap=recording(sent)) as rig:
        await rig.enqueue(rig.stay("B1"))
        await waited(rig, looks=4)
        await rig.enqueue(rig.stay("B2", days_ahead=5))
        await waited(rig, looks=1, booking_id="B2")
        assert [p for p, _ in sent].count("/devices/get") == 1
        assert [b.get("use_backup_access_code_pool") for b in creates(sent)] == [None, None]
        assert PULL not in {p for p, _ in sent}
        assert (await rig.state("B1")).state is Phase.WAITING


async def test_cancel_removes_the_backup_and_its_original(redis: Redis, redis_url: str) -> None:
    """A cancelled stay that holds a backup: both the backup and the original leave the lock
    (the original once the lock takes its delete, after the failure clears)."""
    async with Rig(redis_url, lock(failing(duration=1.0)), overrides=ON) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        assert (await rig.state("B1")).backup
        await cancel_stay(rig.pool, "B1", now=rig.now)
        await rig.run()
        assert (await rig.state("B1")).state is Phase.CANCELLED
        assert rig.sandbox.codes_on("lock-1") == []


async def test_new_dates_replace_a_backup_with_a_code_of_their_own(
    redis: Redis, redis_url: str
) -> None:
    """An update with new dates for a stay holding a backup: the backup and its original are
    removed (a backup keeps its original's window) and a new code is made for the new dates."""
    async with Rig(redis_url, lock(failing(duration=1.0)), overrides=ON) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        held = await rig.state("B1")
        assert held.backup
        rig.sandbox.clock.advance(2)  # past the failure: the new code can set
        with capture_logs() as logs:
            await rig.enqueue({**rig.stay("B1", days_ahead=3), "action": "update"})
            await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED and not state.backup
        [code] = rig.sandbox.codes_on("lock-1")
        assert code["access_code_id"] == state.access_code_id != held.access_code_id
        assert state.stay.starts_at is not None and not code["is_backup"]
        assert datetime.fromisoformat(code["starts_at"]) == state.stay.starts_at.replace(
            microsecond=state.stay.starts_at.microsecond // 1000 * 1000
        )
        assert len(events(logs, "access_code.backup_dropped")) == 1


@pytest.mark.parametrize("key", ["backup_access_code", "access_code"])
async def test_pull_answer_under_either_key_is_read(
    redis: Redis, redis_url: str, key: str
) -> None:
    """A pull answered under `backup_access_code` only, or `access_code` only: the backup is
    read from it all the same."""
    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return OneKey(inner, key)

    async with Rig(redis_url, lock(failing()), overrides=ON, wrap=wrap) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        state = await rig.state("B1")
        [backup] = [c for c in rig.sandbox.codes_on("lock-1") if c["is_backup"]]
        assert state.state is Phase.SCHEDULED
        assert (state.access_code_id, state.code) == (backup["access_code_id"], backup["code"])


async def test_guard_look_keeps_a_backup_scheduled(redis: Redis, redis_url: str) -> None:
    """A guard look at a stay on a backup reads the backup (not the failing original): the stay
    stays scheduled, nothing is unscheduled or told again."""
    sent: Sent = []
    async with Rig(redis_url, lock(failing()), overrides=ON, wrap=recording(sent)) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        held = await rig.state("B1")
        looks = len(sent)
        with capture_logs() as logs:
            assert await rig.make_due() == 1
            await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED and state.backup and state.scheduled_at
        gets = [body for path, body in sent[looks:] if path == "/access_codes/get"]
        assert gets and all(b["access_code_id"] == held.access_code_id for b in gets)
        assert not events(logs, "access_code.unscheduled")
        assert len(await rig.pool.xrange("codeprov:results")) == 1


async def test_move_removes_the_backup_and_its_original(redis: Redis, redis_url: str) -> None:
    """A stay on a backup moved to another lock: the backup and the original leave the old lock,
    the new lock gets a code of its own."""
    old = DeviceSpec(id="lock-1", latency=Latency.fixed(0.2), faults=[failing(duration=1.0)])
    new = DeviceSpec(id="lock-2", latency=Latency.fixed(0.2))
    async with Rig(redis_url, Scenario(devices=[old, new]), overrides=ON) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        held = await rig.state("B1")
        assert held.backup
        await rig.enqueue({**rig.stay("B1", device=1), "action": "update"})
        await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED and not state.backup
        assert rig.sandbox.codes_on("lock-1") == []
        [code] = rig.sandbox.codes_on("lock-2")
        assert code["access_code_id"] == state.access_code_id
        assert state.previous is not None
        assert state.previous.access_code_id == held.access_code_id
