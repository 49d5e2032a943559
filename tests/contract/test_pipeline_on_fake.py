"""The whole pipeline on Seam's own fake: `codeprov enqueue --file`, then `worker --burst`."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import CompletedProcess

from harness import run_cli
from seam_servers import FakeSeam


def codeprov(env: dict[str, str], *args: str, stdin: bytes = b"") -> CompletedProcess[bytes]:
    return run_cli(env["REDIS_URL"], *args, stdin=stdin, env=env)


def test_enqueue_then_burst_schedules_every_valid_stay(
    seam_fake: FakeSeam, redis_url: str, tmp_path: Path
) -> None:
    """Time-bound stays on the fake's locks end scheduled, one code each; a bad lock fails."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    locks = [seam_fake.seed["august_device_1"], seam_fake.seed["august_device_2"]]
    now, prefix = datetime.now(UTC), f"fake-{os.getpid()}-{tmp_path.name}"
    stays = [
        {
            "booking_id": f"{prefix}-{i}",
            "device_id": locks[i % 2],
            "starts_at": (now + timedelta(days=1 + i)).isoformat(),
            "ends_at": (now + timedelta(days=3 + i)).isoformat(),
        }
        for i in range(4)
    ]
    lines = [json.dumps(s) for s in stays] + [
        json.dumps({"booking_id": f"{prefix}-x", "device_id": "no_such_lock"})
    ]
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SEAM_ENDPOINT": seam_fake.url,
        "SEAM_API_KEY": seam_fake.seed["seam_apikey1_token"],
        "CODEPROV_POLL_INITIAL": "0.2",
        "CODEPROV_LOG_FORMAT": "json",
    }
    assert codeprov(env, "enqueue", "--file", "-", stdin="\n".join(lines).encode()).returncode == 0
    burst = codeprov(env, "worker", "--burst")
    assert burst.returncode == 0, burst.stderr[-2000:]
    for s in stays:
        status = json.loads(codeprov(env, "status", s["booking_id"], "--json").stdout)
        assert status["state"] == "scheduled", status
    failed = json.loads(codeprov(env, "status", f"{prefix}-x", "--json").stdout)
    assert failed["failure"]["reason"] == "device_not_found"
    listed = {lock: [c["name"] for c in _codes(seam_fake, env, lock)] for lock in locks}
    for s in stays:
        assert listed[s["device_id"]].count(f"Stay {s['booking_id']}") == 1


def _codes(fake: FakeSeam, env: dict[str, str], lock: str) -> list[dict[str, str]]:
    import httpx

    answer = httpx.post(
        f"{fake.url}/access_codes/list",
        json={"device_id": lock},
        headers={"Authorization": f"Bearer {env['SEAM_API_KEY']}"},
        timeout=10,
    )
    return [c for c in answer.json()["access_codes"] if c["device_id"] == lock]
