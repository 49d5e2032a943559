"""Every CLI command that talks to Redis, with nothing listening on REDIS_URL's port: exit 2 and
one line naming the (masked) URL, at once for one-shot commands; status 1 keeps its meaning."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import redis

from bench.cluster import CODEPROV, ROOT
from worker.localredis import free_port

PASSWORD = "Zq7xWv9kTt"
ONE_SHOT = [
    ("status", "B1"),
    ("cancel", "B1"),
    ("stats",),
    ("enqueue", "--booking-id", "B1", "--device-id", "lock-1"),
]


def run(port: int, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    env["REDIS_URL"] = f"redis://app:{PASSWORD}@127.0.0.1:{port}/0"
    start = time.monotonic()
    done = subprocess.run([CODEPROV, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    return done, time.monotonic() - start


def assert_one_clear_line(done: subprocess.CompletedProcess[str], port: int) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        f"codeprov: Redis at redis://app:***@127.0.0.1:{port}/0 is unreachable: ConnectionError: "
    ), line
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize("args", ONE_SHOT, ids=[a[0] for a in ONE_SHOT])
def test_one_shot_command_says_redis_is_unreachable_at_once(args: tuple[str, ...]) -> None:
    """Nothing on the port: exit 2 with one `codeprov: Redis at ... is unreachable` line, in
    well under arq's ten 1 s retries."""
    port = free_port()
    done, took = run(port, *args)
    assert_one_clear_line(done, port)
    assert took < 8.0, took


@pytest.mark.slow
def test_metrics_waits_for_redis_then_says_it_is_unreachable() -> None:
    """`codeprov metrics` rides out arq's start-up retries (a service), then exits 2 with one
    `codeprov:` line instead of a traceback."""
    port = free_port()
    done, _ = run(port, "metrics", "--port", str(free_port()))
    assert_one_clear_line(done, port)


def test_a_full_redis_answer_never_quotes_the_record(tmp_path: Path) -> None:
    """A cancel refused for OOM says so in one line without the stay's record (it holds a PIN)."""
    from worker.localredis import LocalRedis

    server = LocalRedis(directory=str(tmp_path)).start()
    try:
        client = redis.Redis.from_url(server.url)
        state = {"stay": {"booking_id": "B1", "device_id": "lock-1"}, "code": "918273",
                 "state": "scheduled", "seq": 3, "access_code_id": "ac-1",
                 "enqueued_at": "2026-12-01T00:00:00+00:00",
                 "updated_at": "2026-12-01T00:00:00+00:00"}
        client.set("codeprov:stay:B1", json.dumps(state))
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # below what Redis already uses: full
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
        done = subprocess.run([CODEPROV, "cancel", "B1"], env={**env, "REDIS_URL": server.url},
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        client.close()
    finally:
        server.cleanup()
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "OutOfMemoryError" in line or "OOM" in line, line
    assert "918273" not in done.stderr and "booking_id" not in done.stderr
