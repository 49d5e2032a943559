"""`codeprov webhook` freezes its start-up heap out of the garbage collector before serving.

Why: the receiver's ~80,000 long-lived objects (modules, the app, svix's API client) made each
full collection a 20-50 ms pause under load, which `python -m bench receiver` saw as its p99.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from worker.localredis import free_port

SECRET = "whsec_" + base64.b64encode(b"codeprov-webhook-heap-secret-32b").decode()


def test_receiver_freezes_its_start_up_heap(redis_url: str, tmp_path: Path) -> None:
    """The receiver logs `webhook.started` with the start-up objects it froze (over 10,000)."""
    port, log = free_port(), tmp_path / "out.log"
    env = {**os.environ, "REDIS_URL": redis_url, "SEAM_WEBHOOK_SECRET": SECRET,
           "CODEPROV_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "webhook", "--host", "127.0.0.1",
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    (started,) = [e for e in lines if e["event"] == "webhook.started"]
    assert started["frozen_objects"] > 10_000
