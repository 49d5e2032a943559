"""A Redis that stops answering on open connections (its host gone, a partition): reads are
bounded by CODEPROV_REDIS_TIMEOUT, so the worker notices and reconnects once Redis answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from outage import HangingProxy, log, start_worker, state, stop, wait_for, worker_env
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.queue import connect
from worker.settings import Settings

pytestmark = pytest.mark.slow


def redis_port(redis_url: str) -> int:
    return int(redis_url.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.anyio
async def test_a_read_redis_never_answers_times_out(redis: Redis, redis_url: str) -> None:
    """A pool from connect(): a read on a hung connection fails within the bound and retries."""
    with HangingProxy(redis_port(redis_url)) as proxy:
        pool = await connect(Settings(redis_url=f"redis://127.0.0.1:{proxy.port}/0",
                                      redis_timeout=2.0))
        try:
            await pool.set("k", "v")
            proxy.hang()
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                async with asyncio.timeout(60):  # unbounded, the read would wait for ever
                    await pool.get("k")
            took = time.monotonic() - started
        finally:
            proxy.resume()
            await pool.aclose()
    # Six tries, each a reconnect (its CLIENT SETINFO waits too) and a read: bounded, not for ever.
    assert took < 45


def test_a_worker_whose_redis_hangs_reconnects(tmp_path: Path, redis_url: str) -> None:
    """The worker's Redis hangs: it logs worker.redis_unavailable, then runs again once it
    answers (before: arq's poll waited for ever, the worker alive and doing nothing)."""
    with HangingProxy(redis_port(redis_url)) as proxy:
        env = worker_env(tmp_path, proxy.port, CODEPROV_REDIS_TIMEOUT="2")
        proc = start_worker(env, tmp_path)
        try:
            wait_for(lambda: state(env).get("state") == "running", 30, tmp_path)
            proxy.hang()
            wait_for(lambda: "worker.redis_unavailable" in log(tmp_path), 60, tmp_path)
            proxy.resume()
            wait_for(lambda: log(tmp_path).count('"worker.started"') >= 2, 60, tmp_path)
        finally:
            stop(proc)
