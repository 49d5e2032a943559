"""An event that lands while a step of its stay runs is not lost: the step may have read the
code before it, so the step's end moves the stay's next check to now."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from harness import Rig
from redis.asyncio import Redis

from jobs.events import Events, SeamEvent
from jobs.pipeline import JobInfo, advance_stay
from jobs.state import StayStore
from seam_sandbox import DeviceSpec, Latency, Scenario
from worker.queue import job_id
from worker.wiring import build_deps

pytestmark = pytest.mark.anyio


class BeforeGet(httpx.AsyncBaseTransport):
    """Forwards to the sandbox; runs `hook` before each /access_codes/get is forwarded."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.hook: Callable[[], Awaitable[None]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/access_codes/get" and self.hook is not None:
            await self.hook()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_event_during_a_check_moves_the_next_check_to_now(
    redis: Redis, redis_url: str
) -> None:
    """A check runs (arq's in-progress key set) and an event for its code comes meanwhile: the
    next check, planned a minute out, is due at once when the step ends."""
    slow_lock = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(3600))])
    minute = {"poll_initial": 60.0, "poll_max": 300.0}
    async with Rig(redis_url, slow_lock, overrides=minute) as rig:
        transport = BeforeGet(rig.transport())
        deps = build_deps(rig.settings, rig.pool, seam_transport=transport,
                          clock=rig.sandbox.clock.now)
        store, events = StayStore(rig.pool), Events(rig.pool, "codeprov", rig.settings.queue_name)
        try:
            await rig.enqueue(rig.stay("B1"))
            await advance_stay(deps, "B1", 0, JobInfo(job_id("B1", 0, prefix="codeprov")))
            state = await store.get("B1")
            assert state is not None and state.access_code_id is not None and state.seq == 1
            check = job_id("B1", 1, prefix="codeprov")
            await rig.pool.set(f"arq:in-progress:{check}", b"1", px=30_000)  # arq runs it

            async def event_meanwhile() -> None:
                assert state is not None and state.access_code_id is not None
                await events.take(SeamEvent(event_id="e1", event_type="access_code.changed",
                                            access_code_id=state.access_code_id))

            transport.hook = event_meanwhile
            await advance_stay(deps, "B1", 1, JobInfo(check))
            after = await store.get("B1")
            due = await rig.pool.zscore(rig.settings.queue_name, job_id("B1", 2, prefix="codeprov"))
        finally:
            await deps.seam.aclose()
    assert after is not None and after.seq == 2 and after.next_check_at is not None
    assert (after.next_check_at - rig.now).total_seconds() > 30  # planned a minute out
    assert due is not None and due <= time.time() * 1000 + 1000  # yet due now
