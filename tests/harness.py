"""An end-to-end rig: real Redis, real arq workers, the sandbox over ASGITransport."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from arq.connections import ArqRedis
from arq.worker import Worker

from jobs.enqueue import EnqueueResult, enqueue_stay
from jobs.state import StayState, StayStore
from seam_sandbox import Latency, Sandbox, SandboxClock, Scenario
from worker.queue import connect
from worker.runtime import make_worker
from worker.settings import Settings

FAST = dict(
    poll_initial=0.05,
    poll_max=0.2,
    poll_jitter=0.0,
    rate_per_second=1000,
    rate_burst=100,
    device_creates_per_minute=60_000,
    device_updates_per_minute=60_000,
    device_deletes_per_minute=60_000,
    transient_backoff_max=0.2,
    schedule_deadline=3600,
)


def iso(dt: datetime) -> str:
    return dt.isoformat()


@dataclass
class Rig:
    redis_url: str
    scenario: Scenario = field(default_factory=lambda: Scenario(device_count=3))
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    # Around the sandbox's transport: what the network (or another Seam) does to its answers.
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None
    sandbox: Sandbox = field(init=False)
    settings: Settings = field(init=False)
    pool: ArqRedis = field(init=False)

    async def __aenter__(self) -> Rig:
        self.sandbox = Sandbox(self.scenario, seed=self.seed, clock=SandboxClock(speed=1.0))
        self.settings = Settings(
            redis_url=self.redis_url,
            seam_api_key=self.sandbox.api_key,
            seam_endpoint="http://sandbox",
            **{**FAST, **self.overrides},
        )
        self.pool = await connect(self.settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.aclose()

    @property
    def now(self) -> datetime:
        return self.sandbox.clock.now()

    @property
    def devices(self) -> list[str]:
        return self.sandbox.device_ids

    def transport(self) -> httpx.AsyncBaseTransport:
        inner = httpx.ASGITransport(app=self.sandbox.app)
        return self.wrap(inner) if self.wrap else inner

    def stay(
        self,
        booking_id: str,
        device: int = 0,
        *,
        days_ahead: float = 1,
        nights: float = 2,
        **extra: Any,
    ) -> dict[str, Any]:
        starts = self.now + timedelta(days=days_ahead)
        return {
            "booking_id": booking_id,
            "device_id": self.devices[device],
            "starts_at": iso(starts),
            "ends_at": iso(starts + timedelta(days=nights)),
            **extra,
        }

    async def enqueue(self, stay: dict[str, Any]) -> EnqueueResult:
        return await enqueue_stay(self.pool, stay, now=self.now)

    async def state(self, booking_id: str) -> StayState:
        found = await StayStore(self.pool).get(booking_id)
        assert found is not None, booking_id
        return found

    async def run(self, workers: int = 1, timeout: float = 30.0) -> None:
        """Run `workers` burst workers until only guard looks are left (worker/burst.py)."""
        ws = [self._worker(burst=True) for _ in range(workers)]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.async_run() for w in ws)), timeout)
        finally:
            for w in ws:
                await w.close()

    async def run_until(self, done: Callable[[], Any], timeout: float = 30.0) -> None:
        """Run one long-lived worker until the async predicate `done()` is true, then stop it."""
        w = self._worker(burst=False)
        task = asyncio.create_task(w.async_run())
        try:
            async with asyncio.timeout(timeout):
                while not await done():
                    if task.done():
                        return  # the worker died: stop_worker raises why
                    await asyncio.sleep(0.02)
        finally:
            await stop_worker(w, task, timeout)

    def _worker(self, *, burst: bool) -> Any:
        return make_worker(
            self.settings,
            burst=burst,
            poll_delay=0.01,
            seam_transport=self.transport(),
            clock=self.sandbox.clock.now,
            handle_signals=False,
        )

    async def make_due(self) -> int:
        """Pretend arq's wall clock caught up: every queued job becomes due now."""
        members = await self.pool.zrange(self.settings.queue_name, 0, -1)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        if members:
            await self.pool.zadd(self.settings.queue_name, {m: now_ms for m in members})
        return len(members)


async def stop_worker(worker: Worker, task: asyncio.Task[None], timeout: float = 30.0) -> None:
    """Stop a running worker the way a burst worker ends: it picks no new job, lets the running
    ones finish and returns from its poll loop between two iterations.

    Cancelling its task instead can cut a job or a WATCH pipeline mid-call: a pipeline's
    connection leaks (a ResourceWarning), or the job's in-progress key outlives it and blocks
    that job for job_timeout + 10 s. Past `timeout` it is cancelled anyway, and that raises.
    """
    worker.allow_pick_jobs = False
    worker.burst, worker.max_burst_jobs = True, 0  # main() returns after its next poll
    try:
        await asyncio.wait_for(task, timeout)
    finally:
        await worker.close()


def fast_latency(seconds: float = 0.2) -> Latency:
    return Latency.fixed(seconds)


def run_cli(
    redis_url: str, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`codeprov ARGS` in a subprocess against redis_url, as an operator would run it."""
    full = {**os.environ, **(env or {}), "REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        input=stdin,
        capture_output=True,
        env=full,
        timeout=120,
        check=False,
    )
