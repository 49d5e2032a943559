"""The worker runtime: the job functions, registered with arq (wiring: `worker.wiring`).

Job functions are thin: they validate what arq hands them, then call jobs.pipeline. Anything
unexpected (a Redis blip, a bug) becomes an arq Retry with backoff, never a silently broken
chain; a bad job never raises out of here, so it never kills a worker or blocks others.
`worker.process.run_worker` runs it, and starts it again when Redis goes away.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from arq import Retry
from arq.connections import ArqRedis
from arq.cron import cron
from arq.worker import Worker, func

from jobs.pipeline import JobInfo, StayBusy, advance_stay
from jobs.reconcile import reconcile
from jobs.state import Failure, Phase, booking_of
from jobs.upgrade import guard_legacy
from worker.burst import BurstWorker
from worker.deps import Clock, Deps, utcnow
from worker.errors import InvalidInput
from worker.limiter import backoff
from worker.logs import get_logger
from worker.queue import (
    REJECT_FUNCTION,
    STEP_FUNCTION,
    deserialize,
    reconcile_name,
    redis_settings,
    serialize,
)
from worker.settings import Settings
from worker.wiring import DEPS_KEY, Lifecycle, LimiterFactory, shared_limiter


def _deps(ctx: dict[str, Any]) -> Deps:
    deps = ctx[DEPS_KEY]
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
        get_logger(booking_id=booking_of(booking_id), job_id=job.job_id).error(
            "job.rejected", reason=str(exc))
    except Exception as exc:
        delay = backoff(job.job_try - 1, base=1.0, cap=60.0)
        log = get_logger(booking_id=booking_of(booking_id), job_id=job.job_id, job_try=job.job_try)
        log.error(
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
    shown = booking_of(booking_id) if booking_id else None
    get_logger(job_id=job.job_id, booking_id=shown).error("job.rejected", reason=reason)
    if booking_id is None:
        return
    try:
        state = await deps.store.get(booking_id)
    except InvalidInput:
        return
    if state is None or state.done or state.seq != int(match["seq"]):  # type: ignore[index]
        return
    seq = state.seq
    state.state, state.seq, state.updated_at = Phase.FAILED, seq + 1, deps.clock()
    state.failure = Failure(reason="invalid_job", message=reason)
    if await deps.store.commit(state, expected_seq=seq):
        get_logger(booking_id=booking_of(booking_id), job_id=job.job_id).error(
            "provisioning.failed", reason="invalid_job", message=reason
        )


async def reconcile_job(ctx: dict[str, Any]) -> int:
    """arq cron: every minute, one worker re-enqueues stays whose job went missing."""
    deps = _deps(ctx)
    found = await reconcile(
        deps.redis, deps.store, now=deps.clock(), grace=max(60.0, deps.settings.job_timeout + 10)
    )
    await guard_legacy(deps.redis, deps.store, spread=deps.settings.guard_poll)  # once
    return len(found)


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
    life = Lifecycle(settings, seam_transport=seam_transport, clock=clock,
                     limiter_factory=limiter_factory, on_deps=on_deps, orphaned=orphaned,
                     running=running if running is not None else set())
    return BurstWorker(
        key_prefix=settings.key_prefix,
        functions=[
            func(advance_stay_job, name=STEP_FUNCTION, max_tries=100),
            func(reject_job, name=REJECT_FUNCTION, max_tries=1),
        ],
        cron_jobs=[_reconciler(settings)],
        on_startup=life.startup,
        on_shutdown=life.shutdown,
        on_job_start=life.job_started,
        after_job_end=life.job_recorded,
        redis_pool=redis_pool,
        **worker_options(settings, burst=burst, poll_delay=poll_delay,
                         handle_signals=handle_signals),
    )


def _reconciler(settings: Settings) -> Any:
    """The reconciler's cron: one worker a minute (arq's `unique`)."""
    return cron(reconcile_job, name=reconcile_name(settings.key_prefix), second={7}, unique=True,
                timeout=settings.job_timeout, keep_result=0, max_tries=1)


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
