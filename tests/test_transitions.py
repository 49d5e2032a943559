"""Each change in a code's health is logged exactly once, whichever worker sees it."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.pipeline import JobInfo, advance_stay
from jobs.state import Phase
from jobs.transitions import current, diff, snapshot
from seam_sandbox import DeviceSpec, Fault, Latency, Scenario
from worker.seam_models import AccessCode
from worker.wiring import build_deps

pytestmark = pytest.mark.anyio


def offline_lock(duration: float = 0.8) -> Scenario:
    fault = Fault(kind="device_offline", start=0, duration=duration)
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1), faults=[fault])])


class WithoutCreatedAt(httpx.AsyncBaseTransport):
    """The sandbox as a Seam that stamps no `created_at` on errors, warnings or mutations."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        raw = await response.aread()
        try:
            raw = json.dumps(_unstamped(json.loads(raw))).encode()
        except ValueError:
            pass  # not JSON: passed on as it came
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(response.status_code, headers=headers, content=raw)


def _unstamped(value: Any) -> Any:
    if isinstance(value, list):
        return [_unstamped(v) for v in value]
    if not isinstance(value, dict):
        return value
    issue = {"error_code", "warning_code", "mutation_code"} & value.keys()
    return {k: _unstamped(v) for k, v in value.items() if not (issue and k == "created_at")}


def health_events(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, str | None]]:
    keep = ("access_code.error", "access_code.warning", "access_code.scheduled")
    return [(e["event"], e.get("error_code")) for e in logs if e["event"].startswith(keep)]


async def test_transitions_across_a_worker_restart(redis: Redis, redis_url: str) -> None:
    """An error seen by one worker and cleared under the next is logged once each way."""
    async with Rig(redis_url, offline_lock()) as rig:
        await rig.enqueue(rig.stay("B1"))

        async def offline_seen() -> bool:
            return "device_offline" in (await rig.state("B1")).errors

        with capture_logs() as logs:
            await rig.run_until(offline_seen)  # first worker, then it stops
            await rig.run()  # a fresh worker carries on from the stored snapshot
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        assert health_events(logs) == [
            ("access_code.error.added", "device_offline"),
            ("access_code.error.cleared", "device_offline"),
            ("access_code.scheduled", None),
        ]


@pytest.mark.parametrize("stamped", [True, False], ids=["created_at", "no_created_at"])
async def test_cleared_event_reports_duration(
    redis: Redis, redis_url: str, stamped: bool
) -> None:
    """`cleared` says how long the condition lasted: from Seam's created_at, or without one
    from the first look that saw it, to the look that saw it gone (across a worker restart)."""
    offline = 1.5
    wrap = None if stamped else WithoutCreatedAt
    async with Rig(redis_url, offline_lock(offline), wrap=wrap) as rig:
        await rig.enqueue(rig.stay("B1"))

        async def offline_seen() -> bool:
            return "device_offline" in (await rig.state("B1")).errors

        with capture_logs() as logs:
            await rig.run_until(offline_seen)
            first_seen = (await rig.state("B1")).errors["device_offline"]
            await rig.run()
        [cleared] = [e for e in logs if e["event"] == "access_code.error.cleared"]
        fault_ends = rig.sandbox.clock.start + timedelta(seconds=offline)
        gone_by = rig.now  # the look that saw it gone came before this
    if stamped:  # the sandbox stamps the fault's start
        assert abs((first_seen - rig.sandbox.clock.start).total_seconds()) < 0.01
    lasted = cleared["duration_s"]
    assert (fault_ends - first_seen).total_seconds() - 0.001 <= lasted
    assert lasted <= (gone_by - first_seen).total_seconds() + 0.001
    assert cleared["log_level"] == "info"


def test_first_sighting_outlives_later_looks() -> None:
    """A condition's `since` is its first sighting: later looks that stamp another created_at,
    or none, do not move it, so `cleared` spans the whole condition."""
    t0 = datetime(2030, 1, 1, tzinfo=UTC)

    def look(at: float, created_at: float | None) -> dict[str, Any]:
        stamp = None if created_at is None else (t0 + timedelta(seconds=created_at)).isoformat()
        error = {"error_code": "device_offline", "created_at": stamp}
        code = AccessCode(access_code_id="ac1", device_id="lock-1", errors=[error])
        return current(code, t0 + timedelta(seconds=at))["error"]

    seen = snapshot(look(10, None), {})  # first seen at t0 + 10 s, no created_at
    seen = snapshot(look(20, 15), seen)  # a created_at after the first sighting
    seen = snapshot(look(30, None), seen)
    assert seen == {"device_offline": t0 + timedelta(seconds=10)}
    [cleared] = diff("error", seen, {})
    assert (cleared.added, cleared.since) == (False, t0 + timedelta(seconds=10))


async def test_rerun_of_a_finished_check_logs_nothing(redis: Redis, redis_url: str) -> None:
    """A check re-run after it committed (arq re-delivery) is stale and silent."""
    async with Rig(redis_url, offline_lock(30)) as rig:
        await rig.enqueue(rig.stay("B1"))

        async def offline_seen() -> bool:
            return "device_offline" in (await rig.state("B1")).errors

        await rig.run_until(offline_seen)
        seq = (await rig.state("B1")).seq
        deps = build_deps(
            rig.settings, rig.pool, seam_transport=rig.transport(), clock=rig.sandbox.clock.now
        )
        with capture_logs() as logs:
            await advance_stay(deps, "B1", seq - 1, JobInfo("codeprov:B1:x", 2))
        await deps.seam.aclose()
        assert logs == []
        assert (await rig.state("B1")).seq == seq


async def louder_than_debug(redis_url: str, offline: float) -> tuple[list[tuple[str, Any]], int]:
    """The info-or-louder events of one stay's run with its lock offline, and its checks."""
    async with Rig(redis_url, offline_lock(offline)) as rig:
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run()
        checks = (await rig.state("B1")).checks
    events = [(e["event"], e.get("error_code")) for e in logs if e["log_level"] != "debug"]
    return sorted(events), checks


async def test_unchanged_check_logs_nothing_above_debug(redis: Redis, redis_url: str) -> None:
    """Polls that see no change add no info-or-louder events: a lock offline for longer
    (many more unchanged polls) logs exactly the same events at info and above."""
    short, short_checks = await louder_than_debug(redis_url, 1.0)
    await redis.flushdb()
    long, long_checks = await louder_than_debug(redis_url, 2.5)
    assert long_checks >= short_checks + 3  # the polls that saw no change
    assert long == short
    assert long.count(("access_code.error.added", "device_offline")) == 1


async def test_transient_error_logged_at_warning(redis: Redis, redis_url: str) -> None:
    """A transient error appears at warning level with its classification."""
    async with Rig(redis_url, offline_lock(0.3)) as rig:
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run()
        [added] = [e for e in logs if e["event"] == "access_code.error.added"]
        assert (added["log_level"], added["severity"]) == ("warning", "transient")
        assert added["booking_id"] == "B1" and added["device_id"] == "lock-1"
        assert added["access_code_id"] and added["job_id"].startswith("codeprov:B1:")


async def test_at_risk_logged_once(redis: Redis, redis_url: str) -> None:
    """A stay near its start and not yet scheduled emits provisioning.at_risk once."""
    overrides = {"at_risk_margin": 7200.0}
    async with Rig(redis_url, offline_lock(0.6), overrides=overrides) as rig:
        await rig.enqueue(rig.stay("B1", days_ahead=0.05))  # starts in 72 minutes
        with capture_logs() as logs:
            await rig.run()
        at_risk = [e for e in logs if e["event"] == "provisioning.at_risk"]
        assert len(at_risk) == 1
