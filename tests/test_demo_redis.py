"""`codeprov demo` touches only a Redis it started, or the one REDIS_URL names explicitly."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from redis import Redis

from bench.cluster import CODEPROV, ROOT
from worker.localredis import LocalRedis

DEFAULT_PORT = 6379  # what an unset REDIS_URL used to fall back to


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_demo_without_redis_url_ignores_a_redis_on_6379(tmp_path: Path) -> None:
    """REDIS_URL unset and a Redis answering on localhost:6379: the demo runs on a private
    redis-server of its own and writes nothing to the one on 6379."""
    # Ours on 6379 when the port is free; if something else holds it, the demo must leave that
    # one alone too (and the "private" line below still tells the two behaviours apart).
    decoy = None
    if port_free(DEFAULT_PORT):
        (tmp_path / "decoy").mkdir()
        decoy = LocalRedis(port=DEFAULT_PORT, directory=str(tmp_path / "decoy")).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    env.pop("REDIS_URL", None)
    try:
        done = subprocess.run([CODEPROV, "demo", "--stays", "1", "--workers", "1"],
                              env=env | {"TMPDIR": str(tmp_path)}, cwd=ROOT,
                              capture_output=True, text=True, timeout=90, check=False)
        if decoy is not None:
            with Redis.from_url(decoy.url) as client:
                assert client.dbsize() == 0
    finally:
        if decoy is not None:
            decoy.cleanup()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Redis: a private redis-server" in done.stdout
