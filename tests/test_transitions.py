"""Each change in a code's health is logged exactly once, whichever worker sees it."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.pipeline import JobInfo, advance_stay
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Fault, Latency, Scenario
from worker.runtime import build_deps

pytestmark = pytest.mark.anyio


def offline_lock(duration: float = 0.8) -> Scenario:
    fault = Fault(kind="device_offline", start=0, duration=duration)
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1), faults=[fault])])


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


async def test_cleared_event_reports_duration(redis: Redis, redis_url: str) -> None:
    """`cleared` says how long the condition lasted."""
    async with Rig(redis_url, offline_lock(0.5)) as rig:
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run()
        [cleared] = [e for e in logs if e["event"] == "access_code.error.cleared"]
        assert 0.3 <= cleared["duration_s"] < 5
        assert cleared["log_level"] == "info"


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


async def test_unchanged_check_logs_nothing_above_debug(redis: Redis, redis_url: str) -> None:
    """Polls that see no change add no info-or-louder events."""
    async with Rig(redis_url, offline_lock(1.0)) as rig:
        await rig.enqueue(rig.stay("B1"))
        with capture_logs() as logs:
            await rig.run()
        state = await rig.state("B1")
        assert state.checks >= 4  # several polls happened while offline
        added = [e for e in logs if e["event"] == "access_code.error.added"]
        assert len(added) == 1


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
