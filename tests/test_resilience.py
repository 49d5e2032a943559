"""Worker processes ride out a Redis restart and stop gracefully, losing and doubling nothing."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from bench.cluster import CODEPROV, enqueue, serve_sandbox, start_workers, stays, stop, worker_env
from worker.localredis import LocalRedis

SCENARIO = {
    "device_count": 5,
    "device_defaults": {"latency": {"kind": "fixed", "seconds": 1.0}},
    "rate_limits": {"per_device": False},
}
FAST = dict(poll_initial=0.3, poll_max=1.0, rate_per_second=200, rate_burst=20,
            device_creates_per_minute=6000, log_format="json", log_level="info",
            shutdown_wait=5)


def states(url: str, ids: list[str]) -> dict[str, str]:
    import json

    client: Any = redis_sync.Redis.from_url(url)
    try:
        raw = [client.get(f"codeprov:stay:{b}") for b in ids]
    except redis_sync.ConnectionError:
        return {}
    finally:
        client.close()
    return {b: json.loads(r)["state"] for b, r in zip(ids, raw, strict=True) if r}


def wait_all_scheduled(url: str, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = states(url, ids)
        if len(found) == len(ids) and set(found.values()) == {"scheduled"}:
            break
        time.sleep(0.3)
    return found


def diagnose(url: str, found: dict[str, str]) -> list[object]:
    """What Redis holds for the stays that did not finish (for a failing assertion)."""
    import json

    client: Any = redis_sync.Redis.from_url(url)
    out: list[object] = []
    for booking_id, state in found.items():
        if state == "scheduled":
            continue
        record = json.loads(client.get(f"codeprov:stay:{booking_id}") or b"{}")
        job = f"codeprov:{booking_id}:{record.get('seq')}"
        out.append((booking_id, state, record.get("seq"), record.get("next_check_at"),
                    client.exists(f"arq:job:{job}"), client.zscore("codeprov:queue", job),
                    client.pttl(f"arq:in-progress:{job}"),
                    [k.decode() for k in client.keys(f"arq:*{booking_id}*")]))
    client.close()
    return out


@pytest.mark.slow
@pytest.mark.timeout(200)  # a job lost with the restart waits for the reconciler: up to 2 min
def test_worker_survives_redis_restart(tmp_path: Path) -> None:
    """Redis (AOF on) restarted mid-run: the worker reconnects and every stay is scheduled once."""
    server = LocalRedis(appendonly=True).start()
    try:
        with serve_sandbox(SCENARIO, tmp_path) as served:
            env = worker_env(server.url, served, **FAST)
            batch = stays(30, served.device_ids)
            ids = [s["booking_id"] for s in batch]
            enqueue(batch, env, tmp_path)
            [worker] = start_workers(1, [CODEPROV, "worker"], env, tmp_path)
            try:
                time.sleep(1.0)
                server.stop()
                time.sleep(3.0)
                server.start()  # same port, same directory: AOF replays
                # A job lost with the restart is the reconciler's (every minute, 60 s grace).
                found = wait_all_scheduled(server.url, ids, timeout=150)
                alive = worker.poll() is None
            finally:
                [code] = stop([worker], timeout=15)
            log = (tmp_path / "worker-0.log").read_text()
            assert alive, log[-3000:]
            assert code == 0, log[-3000:]
            assert set(found.values()) == {"scheduled"} and len(found) == len(ids), (
                diagnose(server.url, found), log[-3000:])
            stats = served.stats()
            assert stats["duplicate_names"] == {}
            assert sum(stats["codes_per_device"].values()) == len(ids)
    finally:
        server.cleanup()


@pytest.mark.slow
def test_sigterm_drains_then_another_worker_finishes(tmp_path: Path) -> None:
    """SIGTERM stops a busy worker cleanly; a second worker finishes the rest, nothing lost."""
    server = LocalRedis().start()
    try:
        with serve_sandbox(SCENARIO, tmp_path) as served:
            env = worker_env(server.url, served, **FAST)
            batch = stays(40, served.device_ids)
            ids = [s["booking_id"] for s in batch]
            enqueue(batch, env, tmp_path)
            [first] = start_workers(1, [CODEPROV, "worker"], env, tmp_path)
            time.sleep(1.5)
            first.send_signal(signal.SIGTERM)
            assert first.wait(15) == 0
            second = subprocess.run([CODEPROV, "worker", "--burst"], env=env, timeout=120,
                                    capture_output=True, check=False)
            assert second.returncode == 0, second.stderr[-3000:]
            found = states(server.url, ids)
            assert set(found.values()) == {"scheduled"} and len(found) == len(ids)
            assert served.stats()["duplicate_names"] == {}
    finally:
        server.cleanup()
