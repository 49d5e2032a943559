"""Per-worker liveness: each worker proves that it, itself, is alive.

arq's own health check is one key per queue, shared by all workers, written once an hour: it
says some worker was alive recently, not that this one is. So every worker runs a heartbeat
task that, every few seconds,
- touches a local file (`CODEPROV_HEARTBEAT_FILE`): `codeprov health` checks its mtime, so a
  liveness probe needs no Redis round trip and fails when this process's event loop is stuck;
- writes `{prefix}:worker:{worker_id}` (JSON, with a TTL of 3 beats) and scores the id in
  `{prefix}:workers` by the time it expires, so `codeprov stats` counts live workers without
  SCANning the keyspace.
A clean shutdown removes the key, the index entry and the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker import liveness
from worker.logs import get_logger

FILE_ENV = "CODEPROV_HEARTBEAT_FILE"
INTERVAL_ENV = "CODEPROV_HEARTBEAT_INTERVAL"
DEFAULT_FILE = "/tmp/codeprov-heartbeat"
DEFAULT_INTERVAL = 5.0
MISSED_BEATS = 3  # a key, or a file, older than this many intervals means a dead worker


def heartbeat_file(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get(FILE_ENV) or DEFAULT_FILE)


def heartbeat_interval(env: Mapping[str, str] = os.environ) -> float:
    raw = env.get(INTERVAL_ENV)
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{INTERVAL_ENV} must be positive, not {raw!r}")
    return value


def new_worker_id() -> str:
    """hostname-pid-random: unique even when pid 1 runs in every container of a pod."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def worker_key(prefix: str, worker_id: str) -> str:
    return f"{prefix}:worker:{worker_id}"


def index_key(prefix: str) -> str:
    return f"{prefix}:workers"


async def count_alive(redis: Redis, prefix: str, now: float | None = None) -> int:
    """Workers whose last beat has not expired (O(log N), no SCAN)."""
    now = time.time() if now is None else now
    return int(await redis.zcount(index_key(prefix), f"({now}", "+inf"))


@dataclass
class Heartbeat:
    redis: Redis
    prefix: str
    path: Path
    interval: float = DEFAULT_INTERVAL
    worker_id: str = field(default_factory=new_worker_id)
    clock: Callable[[], float] = time.time
    started_at: float = field(init=False)
    _task: asyncio.Task[None] | None = field(init=False, default=None)
    # The process's (under `run_worker`): told of each beat, for its watchdog.
    _liveness: liveness.Liveness | None = field(init=False, default=None)
    # A part of the worker that is down (e.g. the intake consumer): while any is, the file is
    # not touched, so `codeprov health` fails; the Redis record names them.
    problems: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.started_at = self.clock()

    @property
    def ttl(self) -> float:
        return self.interval * MISSED_BEATS

    async def start(self) -> None:
        """Beat once now (so a probe passes as soon as start-up ends), then keep beating.

        An unwritable heartbeat file fails start-up here, loudly, rather than every probe later.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        process = liveness.current()
        if process is not None and process.path == self.path:
            self._liveness = process
            process.enter(liveness.RUNNING, worker_id=self.worker_id)  # it stops beating now
        else:
            liveness.write_state(self.path, liveness.RUNNING, self.clock(),
                                 worker_id=self.worker_id)
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"codeprov-heartbeat-{self.worker_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._liveness is not None:
            self._liveness.enter(liveness.STOPPING)  # so its thread does not write the file again
        self.path.unlink(missing_ok=True)
        # Bounded: a Redis that is gone must not hold up the shutdown (the key expires anyway).
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(self.interval), self.redis.pipeline() as pipe:
                pipe.delete(worker_key(self.prefix, self.worker_id))
                pipe.zrem(index_key(self.prefix), self.worker_id)
                await pipe.execute()

    def set_problem(self, part: str, reason: str | None) -> None:
        """Mark `part` of this worker down (`reason`) or up again (None)."""
        if reason is None:
            self.problems.pop(part, None)
        else:
            self.problems[part] = reason

    async def beat(self) -> None:
        """Touch the file, then publish; a failure of either is logged, never raised."""
        now = self.clock()
        if self._liveness is not None:
            self._liveness.beat()  # the loop runs, whatever Redis or the problems say
        try:
            if not self.problems:  # first: it proves the event loop runs, whatever Redis does
                self._touch(now)
        except OSError as exc:
            get_logger(worker_id=self.worker_id).error(
                "worker.heartbeat.file_failed", path=str(self.path), error=str(exc)
            )
        try:
            # Bounded by one interval, so a slow Redis never delays the next touch of the file.
            async with asyncio.timeout(self.interval):
                await self._publish(now)
        except (RedisError, TimeoutError) as exc:
            get_logger(worker_id=self.worker_id).warning(
                "worker.heartbeat.redis_failed", error=f"{type(exc).__name__}: {exc}"
            )

    def _touch(self, now: float) -> None:
        touch(self.path, now)

    async def _publish(self, now: float) -> None:
        record = {
            "worker_id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": _iso(self.started_at),
            "last_beat": _iso(now),
            "problems": self.problems,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                worker_key(self.prefix, self.worker_id), json.dumps(record), px=int(self.ttl * 1000)
            )
            pipe.zadd(index_key(self.prefix), {self.worker_id: now + self.ttl})
            pipe.zremrangebyscore(index_key(self.prefix), "-inf", now)
            await pipe.execute()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.beat()


async def start_heartbeat(redis: Redis, prefix: str) -> Heartbeat:
    """The worker's heartbeat, configured from the environment, already beating."""
    heartbeat = Heartbeat(redis, prefix, heartbeat_file(), heartbeat_interval())
    await heartbeat.start()
    return heartbeat


def touch(path: Path | None = None, now: float | None = None) -> None:
    """Mark this process alive without Redis (e.g. while it waits to reconnect to Redis)."""
    path = path or heartbeat_file()
    now = time.time() if now is None else now
    path.touch()
    os.utime(path, (now, now))


def check(path: Path, max_age: float, now: float | None = None) -> str | None:
    """None if the heartbeat file is fresh and its state alive; else what is wrong."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat file at {path}: the worker has not started, or has stopped"
    state = liveness.read_state(path)
    if state.get("state") == liveness.REFUSED:
        return f"{state.get('message') or 'Redis refused this worker'} (since {state.get('since')})"
    if state.get("state") not in (None, *liveness.ALIVE):
        return f"the worker is {state.get('state')} (heartbeat file {path})"
    age = (time.time() if now is None else now) - mtime
    if age > max_age:
        return (
            f"heartbeat file {path} is {age:.0f}s old (max {max_age:.0f}s): "
            f"the worker's event loop is stuck or the worker is gone"
        )
    return None


def describe(path: Path) -> str:
    """What a healthy worker is doing, for `codeprov health`: `ok`, or why it is not running."""
    state = liveness.read_state(path)
    if state.get("state") == liveness.WAITING:
        error = f", last error {state['error']}" if state.get("error") else ""
        return f"ok: waiting for Redis since {state.get('since')} ({state.get('phase')}{error})"
    if state.get("state") == liveness.DRAINING:
        return "ok: taking in the intake stream (--burst)"
    return "ok"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()
