"""SIGTERM ends a worker within a second or two, status 0, in the phases outside arq's loop,
also as PID 1 of its PID namespace (a container without an init), where the kernel ignores a
signal the process has no handler for."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from outage import (
    HangingProxy,
    dropping_port,
    log,
    pid_namespaces_work,
    start_worker,
    start_worker_as_pid_1,
    state,
    stop,
    wait_for,
    wait_phase,
    worker_env,
)

from worker.localredis import free_port
from worker.stopping import CLOSE_LIMIT

as_pid_1 = pytest.mark.skipif(not pid_namespaces_work(),
                              reason="unshare --pid needs root (CAP_SYS_ADMIN)")


def terminate(
    proc: subprocess.Popen[bytes], pid: int, tmp_path: Path, timeout: float = 5
) -> tuple[int, float]:
    """SIGTERM `pid`; `proc`'s exit status and how long it took to end."""
    sent = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"SIGTERM unanswered for {timeout} s: {log(tmp_path)[-2000:]}")
    return code, time.monotonic() - sent


def as_child(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc = start_worker(env, tmp_path)
    return proc, proc.pid


Start = Callable[[dict[str, str], Path], tuple[subprocess.Popen[bytes], int]]


@pytest.mark.parametrize("launch", [as_child, pytest.param(start_worker_as_pid_1, marks=as_pid_1)],
                         ids=["child", "pid-1"])
def test_sigterm_during_the_credentials_check(tmp_path: Path, launch: Start) -> None:
    """A worker checking its credentials against a Redis host that drops SYNs ends on SIGTERM
    within 2 s, status 0, and logs `worker.stopped` naming the phase."""
    with dropping_port() as port:
        env = worker_env(tmp_path, port)
        proc, pid = launch(env, tmp_path)
        try:
            wait_phase(env, "credentials", timeout=15, tmp_path=tmp_path)
            code, took = terminate(proc, pid, tmp_path)
        finally:
            stop(proc)
    assert code == 0, log(tmp_path)[-2000:]
    assert took < 2, took
    assert '"phase": "credentials"' in log(tmp_path).splitlines()[-1]


@pytest.mark.slow
@as_pid_1
def test_sigterm_during_the_backoff_as_pid_1(tmp_path: Path) -> None:
    """As PID 1, a worker waiting out a Redis outage (connections refused) before its next
    attempt ends on SIGTERM within 2 s, status 0 (SIG_DFL would have ignored it)."""
    env = worker_env(tmp_path, free_port())
    proc, pid = start_worker_as_pid_1(env, tmp_path)
    try:
        wait_phase(env, "backoff", timeout=60, tmp_path=tmp_path)  # after arq's ~10 s of tries
        code, took = terminate(proc, pid, tmp_path)
    finally:
        stop(proc)
    assert code == 0, log(tmp_path)[-2000:]
    assert took < 2, took
    assert '"phase": "backoff"' in log(tmp_path).splitlines()[-1]


@as_pid_1
def test_sigterm_during_arqs_connect_as_pid_1(tmp_path: Path) -> None:
    """As PID 1, a worker in arq's connect loop (credentials check timed out against a host
    that drops SYNs) ends on SIGTERM within 2 s, status 0."""
    with dropping_port() as port:
        env = worker_env(tmp_path, port)
        proc, pid = start_worker_as_pid_1(env, tmp_path)
        try:
            wait_phase(env, "connect", timeout=15, tmp_path=tmp_path)
            code, took = terminate(proc, pid, tmp_path)
        finally:
            stop(proc)
    assert code == 0, log(tmp_path)[-2000:]
    assert took < 2, took



def test_sigterm_when_redis_hangs_under_a_running_worker(tmp_path: Path, redis_url: str) -> None:
    """A running worker whose Redis hangs (connections held, nothing answered) ends on SIGTERM
    within arq's close limit (5 s) and a second more, status 0: arq's close is bounded."""
    with HangingProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0])) as proxy:
        env = worker_env(tmp_path, proxy.port, CODEPROV_SHUTDOWN_WAIT="0")
        proc = start_worker(env, tmp_path)
        try:
            wait_for(lambda: state(env).get("state") == "running", 30, tmp_path)
            proxy.hang()
            time.sleep(0.5)  # arq's next poll (every 0.02 s) is now waiting for an answer
            code, took = terminate(proc, proc.pid, tmp_path, timeout=15)
        finally:
            stop(proc)
    assert code == 0, log(tmp_path)[-2000:]
    assert took < CLOSE_LIMIT + 1, took
    assert "worker.close_timed_out" in log(tmp_path)
