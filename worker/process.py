"""The worker process: runs the arq worker and starts it again when Redis goes away.

arq's poll loop exits on a Redis connection error; `run_worker` starts it again with a capped,
jittered backoff instead of letting the process crash-loop under its supervisor. Outside arq's
running loop (checking credentials, connecting, waiting out an outage) the worker is alive and
says so: the `worker.liveness` thread beats its heartbeat file with the state
`waiting_for_redis`, and SIGTERM/SIGINT end it within a second (`worker.stopping`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from arq.worker import Worker
from redis.exceptions import RedisError

from worker import liveness
from worker.deps import utcnow
from worker.health import heartbeat_file, heartbeat_interval, new_worker_id
from worker.limiter import backoff
from worker.logs import get_logger
from worker.queue import connect, redis_settings, refusal
from worker.runtime import make_worker
from worker.settings import Settings, mask_url
from worker.stopping import Signals, Stopped
from worker.wiring import intake_for

T = TypeVar("T")


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    """Run a worker until SIGTERM/SIGINT (or an empty queue with burst), riding out Redis outages.

    A signal in any phase ends it with status 0; a worker whose event loop stops beating while
    arq runs exits 70 (`worker.liveness`'s watchdog).
    """
    signals = Signals()
    signals.note()
    process = liveness.Liveness(heartbeat_file(), heartbeat_interval(), liveness.watchdog_beats())
    with liveness.installed(process):
        try:
            _serve(settings, burst, signals, process)
        except Stopped as stop:
            get_logger().info("worker.stopped", signal=stop.signum.name, phase=stop.phase)
            return
    if signals.by_arq is not None:
        get_logger().info("worker.stopped", signal=signals.by_arq.name, phase="arq")


def _serve(settings: Settings, burst: bool, signals: Signals, process: liveness.Liveness) -> None:
    attempt, orphaned, running = 0, list[str](), set[str]()
    refused: str | None = None
    while True:
        if not refused:  # a refused worker stays unhealthy until Redis lets it in
            process.enter(liveness.WAITING, phase="credentials")
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        started = time.monotonic()
        worker: Worker | None = None
        try:
            signals.run(loop, _check_credentials(settings), "credentials")
            if burst and settings.intake:
                process.enter(liveness.DRAINING)
                signals.run(loop, drain_intake(settings), "intake")
            process.enter(liveness.WAITING, phase="connect")  # until the heartbeat starts
            pool = signals.run(loop, connect(settings), "connect")  # its reads are bounded
            worker = make_worker(settings, burst=burst, orphaned=orphaned, running=running,
                                 redis_pool=pool)
            signals.run_arq(loop, worker)
            if signals.by_arq is None and burst and settings.intake and _on_new_loop(
                signals, _intake_has_entries(settings), "intake"
            ):
                continue  # entries arrived while the burst ran: take them in, run again
            return
        except (RedisError, ConnectionError, TimeoutError) as exc:
            # WatchError too: redis-py raises it for a connection lost during WATCH.
            attempt = 0 if time.monotonic() - started > 60 else attempt + 1
            # Started and never recorded as ended: their in-progress keys would block them.
            orphaned = sorted(running | set(worker.tasks if worker else ()))
            running = set()
            delay = backoff(attempt, base=1.0, cap=30.0, jitter=0.5)
            refused = refusal(exc)
            if refused and burst:
                raise SystemExit(f"codeprov: {refused}: {type(exc).__name__}") from None
            _report(settings, process, exc, refused, delay)
        finally:
            _close_loop(signals, loop)
        _on_new_loop(signals, asyncio.sleep(delay), "backoff")


def _report(
    settings: Settings, process: liveness.Liveness, exc: BaseException, refused: str | None,
    delay: float,
) -> None:
    """Log why arq stopped; say in the heartbeat file whether this worker is waiting or refused."""
    error = f"{type(exc).__name__}: {exc}"
    if refused:
        # Configuration, not an outage: a service keeps trying (the ACL may be fixed), but
        # `codeprov health` fails, so the orchestrator sees a worker that cannot work.
        process.enter(liveness.REFUSED, message=refused)
        get_logger().error("worker.redis_refused", error=error, redis=mask_url(settings.redis_url),
                           retry_in_s=round(delay, 3), message=refused)
    else:
        process.enter(liveness.WAITING, phase="backoff", error=error, retry_in_s=round(delay, 3))
        get_logger().error("worker.redis_unavailable", error=error,
                           redis=mask_url(settings.redis_url), retry_in_s=round(delay, 3))


async def _check_credentials(settings: Settings) -> None:
    """One connection attempt (arq's create_pool PINGs), so a refusal is told at once, not after
    arq's ten retries. Raises only if Redis refused us; an unreachable Redis is left to arq.
    """
    from arq import create_pool

    rs = dataclasses.replace(redis_settings(settings), conn_retries=0)
    try:
        # Bounded: a Redis host that is gone drops our SYNs, and redis-py's retries of the
        # connect would take ~36 s; arq's own connect loop is the one that waits for it.
        async with asyncio.timeout(rs.conn_timeout):
            pool = await create_pool(rs)
    except (RedisError, OSError) as exc:  # TimeoutError too
        if refusal(exc):
            raise
        return
    await pool.aclose()


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


def _close_loop(signals: Signals, loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what a dead worker left running (its jobs, its heartbeat), then close the loop."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending and signals.received is None:
            signals.run(loop, _gather(pending), "shutdown")
        elif pending:  # stopping already: give them a moment, no more
            loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
    finally:
        loop.close()  # removes arq's signal handlers, if they were still installed
        signals.note()


async def _gather(tasks: set[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


def _on_new_loop(signals: Signals, coro: Coroutine[Any, Any, T], phase: str) -> T:
    loop = asyncio.new_event_loop()
    try:
        return signals.run(loop, coro, phase)
    finally:
        loop.close()
        signals.note()


async def drain_intake(settings: Settings) -> int:
    """Take in every intake entry there is now (what `worker --burst` does first)."""
    pool = await connect(settings)
    try:
        intake = intake_for(settings, pool, f"burst-{new_worker_id()}", utcnow)
        await intake.ensure_group()
        return await intake.drain()
    finally:
        await pool.aclose()
