"""A worker's wiring: settings into dependencies (Redis pool, limiter, Seam client, stores), and
what runs around the jobs (the heartbeat, the intake consumer, the events feed) from start-up
to shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from jobs.events import Events
from jobs.intake import Intake
from jobs.latency import LatencyBook
from jobs.state import StayStore
from worker.deps import Clock, Deps, utcnow
from worker.events_feed import EventsFeed, start_feed
from worker.health import Heartbeat, start_heartbeat
from worker.limiter import Budgets, Limiter, Operation, Rate
from worker.logs import get_logger
from worker.settings import Settings, mask_url

DEPS_KEY = "codeprov.deps"  # where arq's ctx holds them, for the job functions


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


def intake_for(settings: Settings, pool: ArqRedis, consumer: str, clock: Clock) -> Intake:
    return Intake(
        pool,
        consumer,
        clock,
        prefix=settings.key_prefix,
        batch=settings.intake_batch,
        claim_idle=settings.intake_claim_idle,
    )


async def start_intake(stack: AsyncExitStack, intake: Intake, heartbeat: Heartbeat) -> None:
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


def feed_for(settings: Settings, deps: Deps, worker_id: str) -> EventsFeed:
    """The events feed of one worker: it polls only while it holds the cluster's lease."""
    events = Events(deps.redis, settings.key_prefix, settings.queue_name, settings.events_alive)
    return EventsFeed(
        deps.redis, deps.seam, events, worker_id, deps.clock, prefix=settings.key_prefix,
        interval=settings.events_poll, overlap=settings.events_overlap,
        catch_up=settings.events_catch_up, request_timeout=settings.http_timeout,
        webhook_interval=max(settings.events_poll, settings.events_webhook_poll),
    )


@dataclass
class Lifecycle:
    """arq's start-up, shutdown and job hooks for one worker run."""

    settings: Settings
    seam_transport: httpx.AsyncBaseTransport | None = None
    clock: Clock = utcnow
    limiter_factory: LimiterFactory = shared_limiter
    on_deps: Callable[[Deps], None] | None = None
    orphaned: Sequence[str] = ()
    running: set[str] = field(default_factory=set)  # started, not yet recorded as ended
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def startup(self, ctx: dict[str, Any]) -> None:
        settings, pool = self.settings, ctx["redis"]
        deps = build_deps(settings, pool, seam_transport=self.seam_transport, clock=self.clock,
                          limiter_factory=self.limiter_factory)
        self.stack.push_async_callback(deps.seam.aclose)
        heartbeat = await start_heartbeat(pool, settings.key_prefix)
        self.stack.push_async_callback(heartbeat.stop)
        if settings.intake:
            consumer = intake_for(settings, pool, heartbeat.worker_id, self.clock)
            await start_intake(self.stack, consumer, heartbeat)
        if settings.events_poll > 0:
            feed = feed_for(settings, deps, heartbeat.worker_id)
            self.stack.push_async_callback(
                start_feed(feed, lambda reason: heartbeat.set_problem("events_feed", reason))
            )
        ctx[DEPS_KEY] = deps
        get_logger().info(
            "worker.started",
            queue=settings.queue_name,
            max_jobs=settings.max_jobs,
            redis=mask_url(settings.redis_url),
            seam_endpoint=settings.seam_endpoint,
        )
        if self.orphaned:
            # Jobs this process was running when Redis went away: they are certainly dead, so
            # free them now instead of waiting out arq's in-progress TTL (job timeout + 10 s).
            await pool.delete(*(in_progress_key_prefix + job for job in self.orphaned))
        if self.on_deps:
            self.on_deps(deps)

    async def shutdown(self, ctx: dict[str, Any]) -> None:
        await self.stack.aclose()

    async def job_started(self, ctx: dict[str, Any]) -> None:
        self.running.add(str(ctx.get("job_id")))

    async def job_recorded(self, ctx: dict[str, Any]) -> None:
        self.running.discard(str(ctx.get("job_id")))
