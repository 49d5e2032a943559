"""The naive poller, a baseline: one arq job per stay that generates a PIN, creates the code,
then asks Seam every second, sleeping inside the job, until the code is scheduled.

It uses codeprov's own Seam client and shared limiter (so both spend Seam's budgets the same
way), but none of its pipeline: no state record, no deferred checks, no learned latency. Each
stay holds a worker slot for its whole programming time, so it needs many slots.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import httpx
from arq.connections import ArqRedis
from arq.worker import Worker, func

from worker.deps import Clock
from worker.errors import RateLimitWait, SeamTransientError
from worker.queue import redis_settings, serialize
from worker.seam import SeamClient
from worker.settings import Settings
from worker.wiring import build_deps

QUEUE = "bench:naive:queue"
FUNCTION = "naive_provision"
_RIG = "bench.naive"
T = TypeVar("T")


@dataclass
class NaiveRig:
    """What the naive jobs share: the Seam client, the clock, and what they saw scheduled."""

    seam: SeamClient
    clock: Clock
    interval: float
    scheduled: dict[str, tuple[str, datetime]] = field(default_factory=dict)


async def naive_provision(
    ctx: dict[str, Any], *, booking_id: str, device_id: str, starts_at: str, ends_at: str
) -> None:
    rig: NaiveRig = ctx[_RIG]
    seam = rig.seam
    generated = await _patiently(lambda: seam.generate_code(device_id))
    code = await _patiently(lambda: seam.create_access_code(
        device_id, code=generated.code, name=f"Stay {booking_id}",
        starts_at=datetime.fromisoformat(starts_at), ends_at=datetime.fromisoformat(ends_at),
    ))
    acid = code.access_code_id
    while not code.is_scheduled:
        await asyncio.sleep(rig.interval)
        code = await _patiently(lambda: seam.get_access_code(acid))
    rig.scheduled[booking_id] = (code.access_code_id, rig.clock())


async def _patiently(call: Callable[[], Awaitable[T]]) -> T:
    """Sleep out the limiter's waits and Seam's transient failures, inside the job."""
    while True:
        try:
            return await call()
        except RateLimitWait as exc:
            await asyncio.sleep(exc.retry_after)
        except SeamTransientError:
            await asyncio.sleep(1.0)


def naive_worker(
    settings: Settings,
    rig_out: list[NaiveRig],
    *,
    transport: httpx.AsyncBaseTransport,
    clock: Clock,
    max_jobs: int,
    poll_delay: float,
    interval: float = 1.0,
) -> Worker:
    """An arq worker for the naive jobs; its rig is appended to `rig_out` once started."""

    async def startup(ctx: dict[str, Any]) -> None:
        deps = build_deps(settings, ctx["redis"], seam_transport=transport, clock=clock)
        rig = NaiveRig(deps.seam, clock, interval)
        ctx[_RIG] = rig
        rig_out.append(rig)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx[_RIG].seam.aclose()

    return Worker(
        functions=[func(naive_provision, name=FUNCTION, timeout=900, max_tries=1)],
        queue_name=QUEUE,
        redis_settings=redis_settings(settings),
        poll_delay=poll_delay,
        max_jobs=max_jobs,
        keep_result=0,
        queue_read_limit=max(1000, max_jobs * 20),
        job_serializer=serialize,
        job_deserializer=json.loads,
        on_startup=startup,
        on_shutdown=shutdown,
        handle_signals=False,
        log_results=False,
    )


async def enqueue_naive(pool: ArqRedis, stay: dict[str, str]) -> None:
    await pool.enqueue_job(
        FUNCTION, _queue_name=QUEUE, _job_id=f"naive:{stay['booking_id']}",
        booking_id=stay["booking_id"], device_id=stay["device_id"],
        starts_at=stay["starts_at"], ends_at=stay["ends_at"],
    )
