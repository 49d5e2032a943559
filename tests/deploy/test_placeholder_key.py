"""`codeprov worker` refuses the example files' placeholder key, and only obvious placeholders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, K8S, parse_env_file


def run_worker(key: str, redis_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`codeprov worker --burst` with this key, against the test Redis (an empty queue)."""
    env = dict(
        os.environ,
        SEAM_API_KEY=key,
        REDIS_URL=redis_url,
        CODEPROV_HEARTBEAT_FILE=str(tmp_path / "heartbeat"),
        CODEPROV_KEY_PREFIX=f"placeholder-test-{tmp_path.name}",
        CODEPROV_QUEUE_NAME=f"placeholder-test-{tmp_path.name}:queue",
    )
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "key",
    [
        parse_env_file(DEPLOY / "env.example")["SEAM_API_KEY"],
        parse_env_file(K8S / "secret.env.example")["SEAM_API_KEY"],
        "seam_...",
        "your-seam-api-key",
        "changeme",
        "<SEAM_API_KEY>",
    ],
)
def test_worker_refuses_a_placeholder_key(key: str, redis_url: str, tmp_path: Path) -> None:
    """A placeholder key stops the worker at once: exit 2 and a message naming SEAM_API_KEY."""
    result = run_worker(key, redis_url, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "SEAM_API_KEY is a placeholder" in result.stderr


@pytest.mark.parametrize("key", ["seam_sandbox_key", "seam_apikey1_token", "seam_test2bMS_94Sr"])
def test_worker_accepts_real_looking_keys(key: str, redis_url: str, tmp_path: Path) -> None:
    """The sandbox's key, Seam's fake key and a real-shaped key run a burst to its end."""
    result = run_worker(key, redis_url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "placeholder" not in result.stderr
