"""The worker runtime: builds the dependencies once, registers the job functions with arq.

Job functions are thin: they validate what arq hands them, then call jobs.pipeline. Anything
unexpected (a Redis blip, a bug) becomes an arq Retry with backoff, never a silently broken
chain; a bad job never raises out of here, so it never kills a worker or blocks others.
`worker.process.run_worker` runs it, and starts it again when Redis goes away.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import httpx
from arq import Retry
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.cron import cron
from arq.worker import Worker, func

from jobs.intake import Intake
from jobs.latency import LatencyBook
from jobs.pipeline import JobInfo, StayBusy, advance_stay
from jobs.reconcile import reconcile
from jobs.state import Failure, Phase, StayStore
from worker.deps import Clock, Deps, utcnow
from worker.errors import InvalidInput
from worker.health import Heartbeat, start_heartbeat
from worker.limiter import Budgets, Limiter, Operation, Rate, backoff
from worker.logs import get_logger
from worker.queue import (
    REJECT_FUNCTION,
    STEP_FUNCTION,
    deserialize,
    reconcile_name,
    redis_settings,
    serialize,
)
from worker.settings import Settings, mask_url

_DEPS = "codeprov.deps"


def budgets(settings: Settings) -> Budgets:
    return Budgets(
        workspace=Rate(settings.rate_per_second, 1.0, settings.rate_burst),
        device={
            Operation.CREATE: Rate(settings.device_creates_per_minute, 60.0),
            Operation.UPDATE: Rate(settings.device_updates_per_minute, 60.0),
            Operation.DELETE: Rate(settings.device_deletes_per_minute, 60.0),
        },
    )


LimiterFactory = Callable[[ArqRedis, Settings], Limiter]


def shared_limiter(redis: ArqRedis, settings: Settings) -> Limiter:
    """The limiter every worker shares through Redis (benchmarks swap in a per-process one)."""
    return Limiter(
        redis, budgets(settings), prefix=settings.key_prefix, max_sleep=settings.rate_max_sleep
    )


def build_deps(
    settings: Settings,
    redis: ArqRedis,
    *,
    seam_transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock = utcnow,
    limiter_factory: LimiterFactory = shared_limiter,
) -> Deps:
    """The one place that wires settings into a Redis pool, a limiter and a Seam client."""
    from worker.seam import SeamClient

    limiter = limiter_factory(redis, settings)
    seam = SeamClient(
        settings.seam_endpoint,
        settings.seam_api_key.get_secret_value(),
        limiter=limiter,
        timeout=settings.http_timeout,
        transport=seam_transport,
    )
    store = StayStore(redis, settings.key_prefix, settings.results_maxlen)
    latency = LatencyBook(redis, settings.key_prefix)
    return Deps(settings=settings, redis=redis, store=store, seam=seam, limiter=limiter,
                latency=latency, clock=clock)


def _deps(ctx: dict[str, Any]) -> Deps:
    deps = ctx[_DEPS]
    assert isinstance(deps, Deps)
    return deps


async def advance_stay_job(
    ctx: dict[str, Any], *, booking_id: Any = None, seq: Any = None, **extra: Any
) -> None:
    deps, job = _deps(ctx), JobInfo(str(ctx.get("job_id")), int(ctx.get("job_try", 1)))
    if not isinstance(booking_id, str) or not isinstance(seq, int) or extra:
        await _reject(deps, job, "job arguments must be exactly booking_id (str) and seq (int)")
        return
    try:
        # Our own limit, below arq's job_timeout: arq's timeout is terminal, ours is retried.
        async with asyncio.timeout(deps.settings.job_timeout * 0.9):
            await advance_stay(deps, booking_id, seq, job)
    except StayBusy:
        raise Retry(defer=1.0) from None  # another step of this stay holds its lock
    except InvalidInput as exc:  # a stored state record that no longer validates
        get_logger(booking_id=booking_id, job_id=job.job_id).error("job.rejected", reason=str(exc))
    except Exception as exc:
        delay = backoff(job.job_try - 1, base=1.0, cap=60.0)
        get_logger(booking_id=booking_id, job_id=job.job_id, job_try=job.job_try).error(
            "job.crashed",
            error=f"{type(exc).__name__}: {exc}",
            retry_in_s=round(delay, 3),
            exc_info=True,
        )
        raise Retry(defer=delay) from exc


async def reject_job(ctx: dict[str, Any], *, reason: Any = "invalid job", **_: Any) -> None:
    await _reject(
        _deps(ctx), JobInfo(str(ctx.get("job_id")), int(ctx.get("job_try", 1))), str(reason)
    )


def _job_id_pattern(prefix: str) -> re.Pattern[str]:
    """worker.queue.job_id's format: `<prefix>:<booking_id>:<seq>`."""
    return re.compile(rf"^{re.escape(prefix)}:(?P<booking_id>.+):(?P<seq>\d+)$")


async def _reject(deps: Deps, job: JobInfo, reason: str) -> None:
    """Log a job we cannot run; fail its stay with the reason if the job id names one."""
    match = _job_id_pattern(deps.store.prefix).match(job.job_id)
    booking_id = match["booking_id"] if match else None
    get_logger(job_id=job.job_id, booking_id=booking_id).error("job.rejected", reason=reason)
    if booking_id is None:
        return
    try:
        state = await deps.store.get(booking_id)
    except InvalidInput:
        return
    if state is None or state.state.is_final or state.seq != int(match["seq"]):  # type: ignore[index]
        return
    seq = state.seq
    state.state, state.seq, state.updated_at = Phase.FAILED, seq + 1, deps.clock()
    state.failure = Failure(reason="invalid_job", message=reason)
    if await deps.store.commit(state, expected_seq=seq):
        get_logger(booking_id=booking_id, job_id=job.job_id).error(
            "provisioning.failed", reason="invalid_job", message=reason
        )


async def reconcile_job(ctx: dict[str, Any]) -> int:
    """arq cron: every minute, one worker re-enqueues stays whose job went missing."""
    deps = _deps(ctx)
    found = await reconcile(
        deps.redis, deps.store, now=deps.clock(), grace=max(60.0, deps.settings.job_timeout + 10)
    )
    return len(found)


def intake_for(settings: Settings, pool: ArqRedis, consumer: str, clock: Clock) -> Intake:
    return Intake(
        pool,
        consumer,
        clock,
        prefix=settings.key_prefix,
        batch=settings.intake_batch,
        claim_idle=settings.intake_claim_idle,
    )


async def _start_intake(stack: AsyncExitStack, intake: Intake, heartbeat: Heartbeat) -> None:
    """The consumer runs supervised: while it is down, the heartbeat says so (health fails).

    Its group is created by the task, not here: a stream that cannot be consumed (WRONGTYPE)
    is the consumer's crash, reported, not a worker that cannot start.
    """

    def report(reason: str | None) -> None:
        heartbeat.set_problem("intake", reason)

    task = asyncio.create_task(intake.serve(report), name=f"codeprov-intake-{intake.consumer}")

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(stop)


def make_worker(
    settings: Settings,
    *,
    burst: bool = False,
    poll_delay: float | None = None,
    seam_transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock = utcnow,
    handle_signals: bool = True,
    on_deps: Callable[[Deps], None] | None = None,
    limiter_factory: LimiterFactory = shared_limiter,
    orphaned: Sequence[str] = (),
    running: set[str] | None = None,
    redis_pool: ArqRedis | None = None,
) -> Worker:
    """An arq Worker for codeprov; `seam_transport` lets tests and the demo run the sandbox.

    `redis_pool`: one from `worker.queue.connect` (reads bounded); else arq connects itself.
    """
    stack = AsyncExitStack()

    async def startup(ctx: dict[str, Any]) -> None:
        pool: ArqRedis = ctx["redis"]
        deps = build_deps(settings, pool, seam_transport=seam_transport, clock=clock,
                          limiter_factory=limiter_factory)
        stack.push_async_callback(deps.seam.aclose)
        heartbeat = await start_heartbeat(pool, settings.key_prefix)
        stack.push_async_callback(heartbeat.stop)
        if settings.intake:
            await _start_intake(
                stack, intake_for(settings, pool, heartbeat.worker_id, clock), heartbeat
            )
        ctx[_DEPS] = deps
        get_logger().info(
            "worker.started",
            queue=settings.queue_name,
            max_jobs=settings.max_jobs,
            redis=mask_url(settings.redis_url),
            seam_endpoint=settings.seam_endpoint,
        )
        if orphaned:
            # Jobs this process was running when Redis went away: they are certainly dead, so
            # free them now instead of waiting out arq's in-progress TTL (job timeout + 10 s).
            await pool.delete(*(in_progress_key_prefix + job for job in orphaned))
        if on_deps:
            on_deps(deps)

    started = running if running is not None else set()

    async def job_started(ctx: dict[str, Any]) -> None:
        started.add(str(ctx.get("job_id")))

    async def job_recorded(ctx: dict[str, Any]) -> None:
        started.discard(str(ctx.get("job_id")))

    async def shutdown(ctx: dict[str, Any]) -> None:
        await stack.aclose()

    return Worker(
        functions=[
            func(advance_stay_job, name=STEP_FUNCTION, max_tries=100),
            func(reject_job, name=REJECT_FUNCTION, max_tries=1),
        ],
        cron_jobs=[
            cron(
                reconcile_job,
                name=reconcile_name(settings.key_prefix),
                second={7},
                unique=True,
                timeout=settings.job_timeout,
                keep_result=0,
                max_tries=1,
            )
        ],
        on_startup=startup,
        on_shutdown=shutdown,
        on_job_start=job_started,
        after_job_end=job_recorded,
        redis_pool=redis_pool,
        **worker_options(settings, burst=burst, poll_delay=poll_delay,
                         handle_signals=handle_signals),
    )


def worker_options(
    settings: Settings,
    *,
    burst: bool = False,
    poll_delay: float | None = None,
    handle_signals: bool = True,
) -> dict[str, Any]:
    """arq's settings for a codeprov worker (bench.noop_worker measures arq with the same)."""
    return dict(
        queue_name=settings.queue_name,
        redis_settings=redis_settings(settings),
        burst=burst,
        poll_delay=settings.queue_poll if poll_delay is None else poll_delay,
        max_jobs=settings.max_jobs,
        job_timeout=settings.job_timeout,
        keep_result=0,
        max_tries=50,
        queue_read_limit=max(1000, settings.max_jobs * 20),
        job_completion_wait=settings.shutdown_wait,
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=handle_signals,
        log_results=False,
    )
