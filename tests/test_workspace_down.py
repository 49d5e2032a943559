"""A workspace-wide Seam error (key refused, endpoint redirecting): stays wait, one log, a gauge."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from harness import Rig, stop_worker
from pydantic import SecretStr
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.state import Phase
from worker.runtime import make_worker
from worker.stats import collect, render_prometheus

pytestmark = pytest.mark.anyio

BOOKINGS = ["B1", "B2", "B3"]
REVOKED = "seam_revoked_key_for_this_test"
Logs = list[MutableMapping[str, Any]]


def use_key(rig: Rig, key: str) -> None:
    """Workers started from now on send `key` (a key rotated in the deployment's secret)."""
    rig.settings = rig.settings.model_copy(update={"seam_api_key": SecretStr(key)})


async def run_workers(rig: Rig, n: int, until: Any, timeout: float = 30.0) -> None:
    """`n` long-lived workers (as in a deployment) until the async predicate `until()` holds."""
    workers = [
        make_worker(rig.settings, burst=False, poll_delay=0.01, seam_transport=rig.transport(),
                    clock=rig.sandbox.clock.now, handle_signals=False)
        for _ in range(n)
    ]
    tasks = [asyncio.create_task(w.async_run()) for w in workers]
    try:
        async with asyncio.timeout(timeout):
            while not await until():
                await asyncio.sleep(0.02)
    finally:
        for w, task in zip(workers, tasks, strict=True):
            await stop_worker(w, task, timeout)


def named(logs: Logs, event: str) -> Logs:
    return [e for e in logs if e["event"] == event]


async def failures(rig: Rig) -> list[int]:
    return [(await rig.state(b)).transient_failures for b in BOOKINGS]


async def enqueue_all(rig: Rig) -> None:
    for i, booking in enumerate(BOOKINGS):
        assert (await rig.enqueue(rig.stay(booking, device=i))).result == "enqueued"


async def test_revoked_key_waits_then_a_fixed_key_schedules_every_stay(
    redis: Redis, redis_url: str
) -> None:
    """Key refused: none fails, 2 workers log seam.workspace_down once; key fixed: all scheduled."""
    async with Rig(redis_url) as rig:
        use_key(rig, REVOKED)
        await enqueue_all(rig)

        async def retried() -> bool:  # every stay met the 401 at least 3 times
            return min(await failures(rig)) >= 3

        with capture_logs() as down_logs:
            await run_workers(rig, 2, retried)
        during = [await rig.state(b) for b in BOOKINGS]
        stats = await collect(rig.pool, rig.settings)
        use_key(rig, rig.sandbox.api_key)
        await rig.make_due()
        with capture_logs() as up_logs:
            await rig.run(workers=2)
        after = [await rig.state(b) for b in BOOKINGS]
        recovered = await collect(rig.pool, rig.settings)
    assert [s.state.is_final for s in during] == [False] * 3
    [down] = named(down_logs, "seam.workspace_down")
    assert (down["log_level"], down["status"]) == ("error", 401)
    assert down["message"] == "Seam refused the API key (401): check SEAM_API_KEY"
    assert not named(down_logs, "seam.request_failed")  # not one warning per stay either
    assert REVOKED not in repr(down_logs)
    assert stats.seam_workspace_down == down["message"]
    assert "codeprov_seam_workspace_down 1" in render_prometheus(stats)
    assert [s.state for s in after] == [Phase.SCHEDULED] * 3
    assert len(named(up_logs, "seam.workspace_recovered")) == 1
    assert recovered.seam_workspace_down is None
    assert "codeprov_seam_workspace_down 0" in render_prometheus(recovered)


async def test_key_never_fixed_fails_at_the_deadline_naming_the_key(
    redis: Redis, redis_url: str
) -> None:
    """A key refused for good: each stay fails not_scheduled_in_time, its message names the 401."""
    async with Rig(redis_url, overrides={"schedule_deadline": 1.5}) as rig:
        use_key(rig, REVOKED)
        for booking in BOOKINGS:  # ongoing codes: the deadline counts from the enqueue
            await rig.enqueue({"booking_id": booking, "device_id": rig.devices[0]})
        with capture_logs() as logs:
            await rig.run(workers=2)
        states = [await rig.state(b) for b in BOOKINGS]
    assert [s.failure.reason if s.failure else None for s in states] == [
        "not_scheduled_in_time"
    ] * 3
    assert all(
        s.failure and "Seam refused the API key (401): check SEAM_API_KEY" in s.failure.message
        for s in states
    )
    assert len(named(logs, "seam.workspace_down")) == 1
    assert REVOKED not in repr([s.failure for s in states])


class Redirect(httpx.AsyncBaseTransport):
    """An http:// endpoint whose server answers every request with a redirect to https://."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.redirecting = inner, True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.redirecting:
            target = f"https://seam.invalid{request.url.path}"
            return httpx.Response(301, headers={"location": target}, request=request)
        return await self.inner.handle_async_request(request)


@dataclass
class RedirectRig(Rig):
    redirect: Redirect | None = None

    def transport(self) -> httpx.AsyncBaseTransport:
        self.redirect = self.redirect or Redirect(super().transport())
        return self.redirect


async def test_redirecting_endpoint_waits_and_says_what_to_fix(
    redis: Redis, redis_url: str
) -> None:
    """A 301 from the endpoint: stays wait, one log names the https:// endpoint; then scheduled."""
    rig = RedirectRig(redis_url)
    async with rig:
        await enqueue_all(rig)

        async def retried() -> bool:
            return min(await failures(rig)) >= 2

        with capture_logs() as logs:
            await rig.run_until(retried)
            assert rig.redirect is not None
            rig.redirect.redirecting = False
            await rig.make_due()
            await rig.run()
        states = [await rig.state(b) for b in BOOKINGS]
    [down] = named(logs, "seam.workspace_down")
    expected = (
        "Seam answered a redirect to seam.invalid: SEAM_ENDPOINT should be https://seam.invalid"
    )
    assert (down["status"], down["message"]) == (301, expected)
    assert [s.state for s in states] == [Phase.SCHEDULED] * 3
    assert len(named(logs, "seam.workspace_recovered")) == 1
