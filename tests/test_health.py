"""Per-worker liveness: heartbeat key and file, `codeprov health`, live-worker count."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis.asyncio import Redis
from structlog.testing import capture_logs

from worker.cli import main
from worker.health import (
    Heartbeat,
    check,
    count_alive,
    heartbeat_interval,
    index_key,
    new_worker_id,
    touch,
    worker_key,
)
from worker.liveness import (
    REFUSED,
    RUNNING,
    STOPPING,
    WAITING,
    Liveness,
    installed,
    read_state,
    write_state,
)
from worker.runtime import make_worker
from worker.settings import Settings

pytestmark = pytest.mark.anyio


def heartbeat(redis: Redis, tmp_path: Path, **kw: object) -> Heartbeat:
    return Heartbeat(redis, "codeprov", tmp_path / "beat", **kw)  # type: ignore[arg-type]


async def test_beat_writes_key_with_ttl_and_touches_file(redis: Redis, tmp_path: Path) -> None:
    """One beat stores the worker's record with a TTL of three beats and touches the file."""
    hb = heartbeat(redis, tmp_path, interval=2.0)
    await hb.beat()
    record = json.loads(await redis.get(worker_key("codeprov", hb.worker_id)))
    assert record["worker_id"] == hb.worker_id
    assert record["pid"] == os.getpid()
    assert {"host", "started_at", "last_beat"} <= record.keys()
    assert 5000 < await redis.pttl(worker_key("codeprov", hb.worker_id)) <= 6000
    assert time.time() - (tmp_path / "beat").stat().st_mtime < 2


async def test_running_heartbeat_keeps_file_fresh(redis: Redis, tmp_path: Path) -> None:
    """Once started, the task re-touches the file every interval."""
    hb = heartbeat(redis, tmp_path, interval=0.05)
    await hb.start()
    try:
        first = (tmp_path / "beat").stat().st_mtime_ns
        await asyncio.sleep(0.2)
        assert (tmp_path / "beat").stat().st_mtime_ns > first
    finally:
        await hb.stop()


async def test_stop_removes_key_index_entry_and_file(redis: Redis, tmp_path: Path) -> None:
    """A clean shutdown leaves no trace: the worker stops counting as alive at once."""
    hb = heartbeat(redis, tmp_path)
    await hb.start()
    assert await count_alive(redis, "codeprov") == 1
    await hb.stop()
    assert await redis.exists(worker_key("codeprov", hb.worker_id)) == 0
    assert await redis.zcard(index_key("codeprov")) == 0
    assert not (tmp_path / "beat").exists()


async def test_silent_worker_stops_counting_as_alive(redis: Redis, tmp_path: Path) -> None:
    """A worker whose last beat is older than three intervals is not counted."""
    await heartbeat(redis, tmp_path, interval=1.0, clock=lambda: time.time() - 10).beat()
    await heartbeat(redis, tmp_path, interval=1.0).beat()
    assert await count_alive(redis, "codeprov") == 1


async def test_redis_failure_is_logged_and_file_still_touched(tmp_path: Path) -> None:
    """A Redis outage never kills the heartbeat: the file (liveness) is still touched."""
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        with capture_logs() as logs:
            await heartbeat(dead, tmp_path).beat()
    finally:
        await dead.aclose()
    assert (tmp_path / "beat").exists()
    assert [e["event"] for e in logs] == ["worker.heartbeat.redis_failed"]


async def test_a_hung_redis_does_not_stall_the_heartbeat(tmp_path: Path) -> None:
    """Publishing is bounded by one interval: a Redis that never answers cannot stall beats."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, never answer
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    interval, loop = 1.0, asyncio.get_running_loop()
    try:
        with capture_logs() as logs:
            async with asyncio.timeout(10):  # a guard only: the bound is asserted below
                started = loop.time()
                await heartbeat(hung, tmp_path, interval=interval).beat()
                took = loop.time() - started
    finally:
        await hung.aclose()
        server.close()
        await server.wait_closed()
    assert took < interval * 1.5  # one interval, plus slack for a loaded machine
    assert (tmp_path / "beat").exists()
    assert logs[0]["error"].startswith("TimeoutError")


async def test_worker_beats_while_running_and_clears_on_shutdown(
    redis: Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make_worker's start-up starts the heartbeat; its shutdown removes it."""
    monkeypatch.setenv("CODEPROV_HEARTBEAT_FILE", str(tmp_path / "w" / "beat"))
    settings = Settings(redis_url=redis_url, seam_api_key="k", seam_endpoint="http://sandbox")
    started = asyncio.Event()
    worker = make_worker(settings, poll_delay=0.05, handle_signals=False,
                         on_deps=lambda _: started.set())
    task = asyncio.create_task(worker.async_run())
    try:
        async with asyncio.timeout(10):
            await started.wait()  # start-up complete: what a real shutdown follows
            while await count_alive(redis, "codeprov") == 0:
                await asyncio.sleep(0.02)
        assert check(tmp_path / "w" / "beat", 15) is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()
    assert await count_alive(redis, "codeprov") == 0
    assert not (tmp_path / "w" / "beat").exists()


def test_check_accepts_a_fresh_file(tmp_path: Path) -> None:
    """A file touched within max_age is healthy."""
    (tmp_path / "beat").touch()
    assert check(tmp_path / "beat", 15) is None


def test_check_rejects_a_stale_file(tmp_path: Path) -> None:
    """A file older than max_age says how old it is."""
    (tmp_path / "beat").touch()
    problem = check(tmp_path / "beat", 15, now=time.time() + 60)
    assert problem is not None and "60s old (max 15s)" in problem


def test_check_rejects_a_missing_file(tmp_path: Path) -> None:
    """No file means no running worker."""
    problem = check(tmp_path / "beat", 15)
    assert problem is not None and "no heartbeat file" in problem


def test_health_command_exit_status(tmp_path: Path) -> None:
    """`codeprov health` exits 0 on a fresh file and 1, with a reason, on a stale one."""
    beat = tmp_path / "beat"
    beat.touch()
    env = {"CODEPROV_HEARTBEAT_FILE": str(beat), "CODEPROV_HEARTBEAT_INTERVAL": "5"}
    assert CliRunner().invoke(main, ["health"], env=env).exit_code == 0
    os.utime(beat, (time.time() - 16, time.time() - 16))
    result = CliRunner().invoke(main, ["health"], env=env)
    assert result.exit_code == 1
    assert "unhealthy" in result.output and "max 15s" in result.output


def test_touch_marks_the_process_alive_without_redis(tmp_path: Path) -> None:
    """touch() refreshes the file `codeprov health` reads, e.g. while waiting for Redis."""
    touch(tmp_path / "beat", now=time.time() - 60)
    assert check(tmp_path / "beat", 15) is not None
    touch(tmp_path / "beat")
    assert check(tmp_path / "beat", 15) is None


def test_interval_must_be_a_positive_number() -> None:
    """A malformed CODEPROV_HEARTBEAT_INTERVAL is a clear error, not a silent default."""
    with pytest.raises(ValueError, match="positive"):
        heartbeat_interval({"CODEPROV_HEARTBEAT_INTERVAL": "0"})
    with pytest.raises(ValueError, match="number of seconds"):
        heartbeat_interval({"CODEPROV_HEARTBEAT_INTERVAL": "5s"})


def test_worker_ids_are_unique_per_process() -> None:
    """Two workers in one process (tests, the demo) get different ids."""
    assert new_worker_id() != new_worker_id()


async def test_a_problem_stops_the_file_and_names_itself(redis: Redis, tmp_path: Path) -> None:
    """While a part of the worker is down the file is not touched; the record names the part."""
    hb = heartbeat(redis, tmp_path, interval=2.0)
    hb.set_problem("intake", "consumer crashed")
    await hb.beat()
    assert not (tmp_path / "beat").exists()
    record = json.loads(await redis.get(worker_key("codeprov", hb.worker_id)))
    assert record["problems"] == {"intake": "consumer crashed"}
    hb.set_problem("intake", None)
    await hb.beat()
    assert (tmp_path / "beat").exists()


def test_health_says_a_worker_waiting_for_redis_is_alive(tmp_path: Path) -> None:
    """A fresh file in `waiting_for_redis`: exit 0, and the output says what it waits in."""
    beat = tmp_path / "beat"
    write_state(beat, WAITING, time.time(), phase="connect", error="TimeoutError: Timeout")
    env = {"CODEPROV_HEARTBEAT_FILE": str(beat), "CODEPROV_HEARTBEAT_INTERVAL": "5"}
    result = CliRunner().invoke(main, ["health"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: waiting for Redis since ")
    assert "(connect, last error TimeoutError: Timeout)" in result.output


def test_health_fails_at_once_for_a_refused_worker(tmp_path: Path) -> None:
    """A fresh file in `redis_refused`: exit 1 with the refusal's message, not `ok`."""
    beat = tmp_path / "beat"
    write_state(beat, REFUSED, time.time(), message="Redis refused the credentials in REDIS_URL")
    env = {"CODEPROV_HEARTBEAT_FILE": str(beat), "CODEPROV_HEARTBEAT_INTERVAL": "5"}
    result = CliRunner().invoke(main, ["health"], env=env)
    assert result.exit_code == 1
    assert "unhealthy: Redis refused the credentials in REDIS_URL" in result.output


async def test_heartbeat_under_liveness_takes_over_and_hands_back(
    redis: Redis, tmp_path: Path
) -> None:
    """Under run_worker's Liveness, start() marks the file `running` (the thread stops
    beating) and stop() marks it stopping, so the thread never writes the removed file again."""
    path = tmp_path / "beat"
    with installed(Liveness(path, 0.05, watchdog=0)) as live:
        live.enter(WAITING, phase="connect")
        hb = heartbeat(redis, tmp_path, interval=0.05)
        await hb.start()
        assert read_state(path)["state"] == RUNNING and live.state == RUNNING
        await hb.stop()
        await asyncio.sleep(0.2)  # four of the thread's intervals
        assert live.state == STOPPING and not path.exists()
