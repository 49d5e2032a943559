"""A worker waiting for Redis is alive and says so; a worker whose event loop is stuck is not,
and exits on its own (the watchdog) so a supervisor that ignores health still restarts it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from outage import BEAT, dropping_port, health, log, start_worker, state, stop, wait_phase
from outage import worker_env as outage_env

from bench.cluster import ROOT
from worker.liveness import (
    RUNNING,
    STUCK_EXIT,
    WAITING,
    Liveness,
    installed,
    read_state,
    watchdog_beats,
)


def test_worker_beats_while_redis_drops_its_connections(tmp_path: Path) -> None:
    """Against a Redis host that drops SYNs, `codeprov worker` keeps its heartbeat file fresh
    past 3 intervals, in the credentials check and in arq's connect, and health exits 0
    saying it is waiting for Redis; the watchdog does not trip."""
    with dropping_port() as port:
        env = outage_env(tmp_path, port, CODEPROV_HEARTBEAT_WATCHDOG="3")
        worker = start_worker(env, tmp_path)
        try:
            for phase in ("credentials", "connect"):  # credentials: bounded by 5 s
                wait_phase(env, phase, timeout=15, tmp_path=tmp_path)
                since = time.monotonic()
                while time.monotonic() - since < 4 * BEAT:
                    assert state(env).get("phase") == phase
                    time.sleep(BEAT / 2)
                answer = health(env)  # max age: 3 x BEAT
                assert answer.returncode == 0, (answer.stderr, log(tmp_path)[-2000:])
                assert answer.stdout.startswith("ok: waiting for Redis since "), answer.stdout
                assert f"({phase}" in answer.stdout
            assert worker.poll() is None, log(tmp_path)[-2000:]
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(5) == 0
        finally:
            stop(worker)
    assert not (tmp_path / "heartbeat").exists()  # a clean stop removes it


STUCK = """
import asyncio, sys, time
from pathlib import Path
from redis.asyncio import Redis
from worker.health import Heartbeat
from worker.liveness import Liveness, installed

path, interval, watchdog, url = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

async def main() -> None:
    heartbeat = Heartbeat(Redis.from_url(url), "codeprov", path, interval)
    await heartbeat.start()
    print("beating", flush=True)
    time.sleep(60)  # a job that blocks the event loop

with installed(Liveness(path, interval, watchdog)):
    asyncio.run(main())
"""


def run_stuck(tmp_path: Path, redis_url: str, watchdog: int) -> subprocess.Popen[str]:
    """A process whose Heartbeat runs under a Liveness, then whose event loop blocks."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(STUCK), str(tmp_path / "heartbeat"), str(BEAT),
         str(watchdog), redis_url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "beating\n"
    return proc


def test_watchdog_exits_a_worker_whose_loop_is_stuck(tmp_path: Path, redis_url: str) -> None:
    """A loop blocked past CODEPROV_HEARTBEAT_WATCHDOG intervals: `worker.stuck`, the stacks,
    and exit status 70, well before the blocking call would have returned."""
    proc = run_stuck(tmp_path, redis_url, watchdog=3)
    try:
        code = proc.wait(timeout=10)
        out, err = proc.communicate(timeout=5)
    finally:
        proc.kill()
    assert code == STUCK_EXIT, err[-2000:]
    assert "worker.stuck" in out, out
    assert 'File "<string>", line 14 in main' in err, err  # the dump shows where it is stuck


def test_a_stuck_loop_fails_health_with_the_watchdog_off(tmp_path: Path, redis_url: str) -> None:
    """Nothing beats for a blocked loop (the liveness thread beats only outside arq): health
    exits 1 once the file is 3 intervals old, though the process is still there."""
    proc = run_stuck(tmp_path, redis_url, watchdog=0)
    env = outage_env(tmp_path, 0)
    try:
        assert read_state(tmp_path / "heartbeat")["state"] == RUNNING
        time.sleep(4 * BEAT)
        answer = health(env)
        alive = proc.poll() is None
    finally:
        proc.kill()
        proc.communicate(timeout=5)
    assert alive
    assert answer.returncode == 1, answer.stdout
    assert "the worker's event loop is stuck" in answer.stderr, answer.stderr


def test_liveness_thread_beats_while_waiting_and_stops_when_running(tmp_path: Path) -> None:
    """In `waiting_for_redis` the thread touches the file each interval; in `running` it does
    not (that is the loop's heartbeat's job), and with the watchdog off nothing exits."""
    path = tmp_path / "heartbeat"
    with installed(Liveness(path, 0.05, watchdog=0)) as live:
        live.enter(WAITING, phase="backoff", error="ConnectionError: gone")
        first = path.stat().st_mtime_ns
        time.sleep(0.2)
        assert path.stat().st_mtime_ns > first
        assert read_state(path) | {"since": None} == {
            "state": WAITING, "since": None, "pid": read_state(path)["pid"], "phase": "backoff",
            "error": "ConnectionError: gone"}
        live.enter(RUNNING)
        held = path.stat().st_mtime_ns
        time.sleep(0.2)
        assert path.stat().st_mtime_ns == held
    assert not path.exists()


def test_watchdog_setting_is_checked() -> None:
    """CODEPROV_HEARTBEAT_WATCHDOG: a count of intervals, 0 for off; anything else is an error."""
    assert watchdog_beats({}) == 6
    assert watchdog_beats({"CODEPROV_HEARTBEAT_WATCHDOG": "0"}) == 0
    with pytest.raises(ValueError, match="number of intervals"):
        watchdog_beats({"CODEPROV_HEARTBEAT_WATCHDOG": "30s"})
    with pytest.raises(ValueError, match="0 \\(off\\)"):
        watchdog_beats({"CODEPROV_HEARTBEAT_WATCHDOG": "-1"})
