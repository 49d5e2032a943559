"""The worker process: runs the arq worker and starts it again when Redis goes away.

arq's poll loop exits on a Redis connection error; `run_worker` starts it again with a capped,
jittered backoff instead of letting the process crash-loop under its supervisor, and keeps the
liveness heartbeat beating while it waits (a Redis outage is not a hung worker).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from redis.exceptions import RedisError

from worker.deps import utcnow
from worker.health import new_worker_id, touch
from worker.limiter import backoff
from worker.logs import get_logger
from worker.queue import connect, redis_settings, refusal
from worker.runtime import intake_for, make_worker
from worker.settings import Settings, mask_url


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Run a worker until SIGTERM/SIGINT (or an empty queue with burst), riding out Redis outages.

    arq's poll loop exits on a Redis connection error; this loop starts it again with a capped,
    jittered backoff instead of letting the process crash-loop under its supervisor.
    """
    attempt, orphaned, running = 0, list[str](), set[str]()
    while True:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        started = time.monotonic()
        worker = make_worker(settings, burst=burst, orphaned=orphaned, running=running)
        try:
            loop.run_until_complete(_check_credentials(settings))
            if burst and settings.intake:
                loop.run_until_complete(drain_intake(settings))
            worker.run()
            if burst and settings.intake and _intake_waiting(settings):
                continue  # entries arrived while the burst ran: take them in, run again
            return
        except (RedisError, ConnectionError, TimeoutError) as exc:
            # WatchError too: redis-py raises it for a connection lost during WATCH.
            attempt = 0 if time.monotonic() - started > 60 else attempt + 1
            # Started and never recorded as ended: their in-progress keys would block them.
            orphaned, running = sorted(running | set(worker.tasks)), set()
            delay = backoff(attempt, base=1.0, cap=30.0, jitter=0.5)
            refused = refusal(exc)
            if refused and burst:
                raise SystemExit(f"codeprov: {refused}: {type(exc).__name__}") from None
            if refused:
                # Configuration, not an outage: a service keeps trying (the ACL may be fixed),
                # but stops beating, so `codeprov health` and the orchestrator see a worker that
                # cannot work. A burst run ends with the error (above).
                get_logger().error(
                    "worker.redis_refused",
                    error=f"{type(exc).__name__}: {exc}",
                    redis=mask_url(settings.redis_url),
                    retry_in_s=round(delay, 3),
                    message=refused,
                )
            else:
                get_logger().error(
                    "worker.redis_unavailable",
                    error=f"{type(exc).__name__}: {exc}",
                    redis=mask_url(settings.redis_url),
                    retry_in_s=round(delay, 3),
                )
        finally:
            _close_loop(loop)
        # Outside the loop: arq's signal handlers went with it, so SIGTERM ends a waiting worker.
        if refused:
            time.sleep(delay)
        else:
            _sleep_alive(delay)


async def _check_credentials(settings: Settings) -> None:
    """One connection attempt (arq's create_pool PINGs), so a refusal is told at once, not after
    arq's ten retries. Raises only if Redis refused us; an unreachable Redis is left to arq.
    """
    from arq import create_pool

    try:
        pool = await create_pool(dataclasses.replace(redis_settings(settings), conn_retries=0))
    except (RedisError, OSError) as exc:
        if refusal(exc):
            raise
        return
    await pool.aclose()


def _intake_waiting(settings: Settings) -> bool:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_intake_has_entries(settings))
    finally:
        loop.close()


async def _intake_has_entries(settings: Settings) -> bool:
    """Pending, or not yet delivered to the group (Redis 6.2 has no `lag`: compare ids)."""
    pool = await connect(settings)
    key = f"{settings.key_prefix}:intake"
    try:
        last = (await pool.xinfo_stream(key))["last-generated-id"]
        groups = await pool.xinfo_groups(key)
        return any(g["pending"] or g["last-delivered-id"] != last for g in groups)
    except RedisError:
        return False
    finally:
        await pool.aclose()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what a dead worker left running (its jobs, its heartbeat), then close the loop."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


def _sleep_alive(seconds: float) -> None:
    """Sleep while waiting for Redis, still beating: a Redis outage is not a hung worker."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        touch()
        time.sleep(min(1.0, left))


async def drain_intake(settings: Settings) -> int:
    """Take in every intake entry there is now (what `worker --burst` does first)."""
    pool = await connect(settings)
    try:
        intake = intake_for(settings, pool, f"burst-{new_worker_id()}", utcnow)
        await intake.ensure_group()
        return await intake.drain()
    finally:
        await pool.aclose()
