"""Two deployments (CODEPROV_KEY_PREFIX) on one Redis database: each has its own job ids, queue
and reconciler, so the same booking id in both is two stays, each provisioned and healed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from harness import FAST
from redis.asyncio import Redis

from jobs.enqueue import enqueue_stay
from jobs.state import Phase, StayStore
from seam_sandbox import Sandbox, SandboxClock, Scenario
from worker.queue import connect, job_id
from worker.runtime import make_worker
from worker.settings import Settings

PREFIXES = ("acme", "globex")


def test_job_ids_carry_the_key_prefix() -> None:
    """A step's job id is `<prefix>:<booking_id>:<seq>`."""
    assert job_id("B1", 3, prefix="acme") == "acme:B1:3"


def test_default_queue_is_the_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CODEPROV_QUEUE_NAME the queue is `<prefix>:queue`; with it, that name."""
    monkeypatch.setenv("CODEPROV_KEY_PREFIX", "acme")
    assert Settings().queue_name == "acme:queue"
    assert Settings(key_prefix="globex").queue_name == "globex:queue"
    monkeypatch.setenv("CODEPROV_QUEUE_NAME", "shared-queue")
    assert Settings().queue_name == "shared-queue"


@pytest.mark.anyio
async def test_reconcilers_have_one_name_per_deployment() -> None:
    """Each deployment's reconciler cron carries its prefix in its name (and so in its job id)."""
    names = [make_worker(Settings(key_prefix=p)).cron_jobs[0].name for p in PREFIXES]
    assert names == ["acme:reconcile_stays", "globex:reconcile_stays"]


@asynccontextmanager
async def deployments(redis_url: str) -> AsyncIterator[tuple[Sandbox, list[Settings]]]:
    sandbox = Sandbox(Scenario(device_count=2), seed=0, clock=SandboxClock(speed=1.0))
    yield sandbox, [
        Settings(redis_url=redis_url, seam_api_key=sandbox.api_key,
                 seam_endpoint="http://sandbox", key_prefix=p, **FAST)  # type: ignore[arg-type]
        for p in PREFIXES
    ]


def worker(settings: Settings, sandbox: Sandbox) -> Worker:
    return make_worker(settings, burst=True, poll_delay=0.01, handle_signals=False,
                       clock=sandbox.clock.now,
                       seam_transport=httpx.ASGITransport(app=sandbox.app))


def stay(sandbox: Sandbox, device: int) -> dict[str, Any]:
    starts = sandbox.clock.now() + timedelta(days=1)
    return {"booking_id": "B1", "device_id": sandbox.device_ids[device],
            "starts_at": starts.isoformat(), "ends_at": (starts + timedelta(days=2)).isoformat()}


async def enqueue_both(
    sandbox: Sandbox, deps: list[Settings], now: datetime | None = None
) -> list[str | None]:
    ids = []
    for device, settings in enumerate(deps):
        pool = await connect(settings)
        try:
            result = await enqueue_stay(pool, stay(sandbox, device), prefix=settings.key_prefix,
                                        now=now or sandbox.clock.now())
        finally:
            await pool.aclose()
        assert result.result == "enqueued", result
        ids.append(result.job_id)
    return ids


async def phases(redis: Redis, deps: list[Settings]) -> list[Phase | None]:
    found = [await StayStore(redis, s.key_prefix).get("B1") for s in deps]
    return [s.state if s else None for s in found]


@pytest.mark.anyio
async def test_same_booking_id_in_two_deployments_is_two_stays(
    redis: Redis, redis_url: str
) -> None:
    """Booking B1 enqueued under two prefixes: two jobs, each deployment's workers schedule
    their own B1 on their own lock."""
    async with deployments(redis_url) as (sandbox, deps):
        assert await enqueue_both(sandbox, deps) == ["acme:B1:0", "globex:B1:0"]
        assert [await redis.zcard(s.queue_name) for s in deps] == [1, 1]
        ws = [worker(s, sandbox) for s in deps]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.async_run() for w in ws)), 30)
        finally:
            for w in ws:
                await w.close()
        assert await phases(redis, deps) == [Phase.SCHEDULED, Phase.SCHEDULED]
        codes = [await StayStore(redis, s.key_prefix).get("B1") for s in deps]
        assert [c.stay.device_id for c in codes if c] == sandbox.device_ids[:2]


@pytest.mark.anyio
async def test_each_deployments_reconciler_runs_and_heals_its_own(
    redis: Redis, redis_url: str
) -> None:
    """Both reconcilers' cron jobs are queued for the same minute, and each re-enqueues its own
    deployment's B1 whose job was lost: both end scheduled."""
    async with deployments(redis_url) as (sandbox, deps):
        past = sandbox.clock.now() - timedelta(minutes=10)  # overdue past the 60 s grace
        jobs = await enqueue_both(sandbox, deps, now=past)
        for settings, job in zip(deps, jobs, strict=True):
            await redis.delete(f"arq:job:{job}")
            await redis.zrem(settings.queue_name, str(job))
        ws = [worker(s, sandbox) for s in deps]
        try:
            for w in ws:
                w._pool = await connect(w_settings(w, deps))
                await w.run_cron(past, 0.5)  # arq's first call only works out the next run
                next_run = w.cron_jobs[0].next_run
                assert next_run is not None
                await w.run_cron(next_run, 0.5)  # that run is now due: queued
            assert [await redis.zcard(s.queue_name) for s in deps] == [1, 1]
            await asyncio.wait_for(asyncio.gather(*(w.async_run() for w in ws)), 30)
        finally:
            for w in ws:
                await w.close()
        assert await phases(redis, deps) == [Phase.SCHEDULED, Phase.SCHEDULED]


def w_settings(w: Worker, deps: list[Settings]) -> Settings:
    [found] = [s for s in deps if s.queue_name == w.queue_name]
    return found
