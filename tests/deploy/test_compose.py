"""deploy/compose.yaml and deploy/env.example: the shape we promise, checked without Docker."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from deploy_helpers import DEPLOY, assert_defaults_or_explained, assert_known_knobs, seconds, tool

from worker.localredis import LocalRedis
from worker.settings import Settings


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(compose["services"][name])


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    """Redis 7 runs with AOF on, noeviction, and its data on a named volume."""
    redis = service(compose, "redis")
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def size(value: str) -> int:
    """A Redis (256mb) or compose (512m) memory size, in bytes."""
    parts = re.fullmatch(r"(\d+)([kmg]?)b?", value.strip().lower())
    assert parts, f"cannot read size {value!r}"
    return int(parts[1]) << (10 * " kmg".index(parts[2] or " "))


def test_redis_refuses_writes_before_the_kernel_kills_it(compose: dict[str, Any]) -> None:
    """Redis has a maxmemory (so noeviction acts) of at most half its container's memory
    limit (the AOF rewrite's fork needs the rest)."""
    redis = service(compose, "redis")
    command = redis["command"]
    assert "--maxmemory" in command, "no maxmemory: noeviction never refuses a write"
    maxmemory = size(command[command.index("--maxmemory") + 1])
    limit = size(redis["deploy"]["resources"]["limits"]["memory"])
    assert 0 < maxmemory <= limit / 2


def test_a_full_redis_refuses_enqueue_and_keeps_its_data(tmp_path: Path) -> None:
    """At maxmemory with noeviction, `codeprov enqueue` exits 2 naming the OOM error, without
    a traceback, and what Redis already holds is still there."""
    server = LocalRedis(directory=str(tmp_path)).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("codeprov:stay:kept", "{}")
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # below what Redis already uses: full
        stay = ["--booking-id", "B1", "--device-id", "d1", "--starts-at", "2030-01-01T15:00:00Z"]
        stay += ["--ends-at", "2030-01-02T11:00:00Z"]
        result = subprocess.run(
            [sys.executable, "-m", "worker.cli", "enqueue", *stay],
            env=dict(os.environ, REDIS_URL=server.url, SEAM_API_KEY=""),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "OutOfMemoryError" in result.stderr and "Traceback" not in result.stderr
        assert client.get("codeprov:stay:kept") == b"{}"
        client.close()
    finally:
        server.cleanup()


def test_containers_restart_when_they_exit(compose: dict[str, Any]) -> None:
    """Workers and the metrics server are restarted when they exit (Docker restarts exited
    containers, never merely unhealthy ones: a worker that stops beating exits)."""
    for name in ("worker", "metrics", "redis"):
        assert service(compose, name)["restart"] in ("unless-stopped", "always"), name


def test_env_example_carries_the_defaults(env_example: dict[str, str]) -> None:
    """Each CODEPROV_* in env.example is codeprov's default, or a comment says why not."""
    assert_defaults_or_explained(DEPLOY / "env.example", env_example)


def test_workers_scale_and_report_health(compose: dict[str, Any]) -> None:
    """Workers: N replicas, `codeprov health` as healthcheck, a read-only root with /tmp."""
    worker = service(compose, "worker")
    assert worker["command"] == ["worker"]
    assert "${CODEPROV_WORKERS" in str(worker["deploy"]["replicas"])
    assert worker["healthcheck"]["test"] == ["CMD", "codeprov", "health"]
    assert worker["read_only"] is True
    assert any(t.startswith("/tmp") for t in worker["tmpfs"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_stop_grace_outlasts_the_shutdown_wait(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    """`docker stop` waits longer than arq's drain before it kills a worker."""
    grace = seconds(service(compose, "worker")["stop_grace_period"])
    assert grace >= int(env_example["CODEPROV_SHUTDOWN_WAIT"]) + 5


def test_sandbox_is_an_optional_profile(compose: dict[str, Any]) -> None:
    """The fake Seam starts only with `--profile sandbox`, on 0.0.0.0:8787, no healthcheck."""
    sandbox = service(compose, "sandbox")
    assert sandbox["profiles"] == ["sandbox"]
    assert sandbox["command"] == [
        "sandbox",
        "--host",
        "0.0.0.0",
        "--port",
        "8787",
        "--scenario",
        "default",
    ]
    assert sandbox["healthcheck"] == {"disable": True}
    assert "profiles" not in service(compose, "worker")


def test_env_example_is_valid_configuration(
    env_example: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """env.example loads as codeprov Settings and names no unknown CODEPROV_ knob."""
    assert {"REDIS_URL", "SEAM_API_KEY", "SEAM_ENDPOINT"} <= env_example.keys()
    assert_known_knobs(env_example)
    for key, value in env_example.items():
        monkeypatch.setenv(key, value)
    assert Settings().redis_url == "redis://redis:6379/0"


def compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin) or a v2 `docker-compose`; None if neither runs."""
    candidates = []
    if docker := tool("docker"):
        candidates.append([docker, "compose"])
    if standalone := tool("docker-compose"):
        candidates.append([standalone])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and "v2." in probe.stdout:
            return command
    return None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    """`docker compose config -q` (no engine needed) accepts compose.yaml with env.example."""
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 CLI here (the structural checks above still ran)")
    shutil.copy(DEPLOY / "compose.yaml", tmp_path / "compose.yaml")
    shutil.copy(DEPLOY / "env.example", tmp_path / ".env")
    result = subprocess.run(
        [
            *command,
            "-f",
            str(tmp_path / "compose.yaml"),
            "--profile",
            "sandbox",
            "--profile",
            "metrics",
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
