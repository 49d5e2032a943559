"""Real processes on loopback for benchmarks: the sandbox server, stays, worker processes.

Everything goes through the commands an operator runs (`codeprov sandbox`, `codeprov enqueue`,
`codeprov worker`), so a benchmark measures what production would do, transport included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CODEPROV = str(Path(sys.executable).parent / "codeprov")


@dataclass(frozen=True)
class Served:
    """A sandbox server process and what it announced."""

    endpoint: str
    api_key: str
    device_ids: list[str]

    def stats(self) -> dict[str, Any]:
        # /_sandbox/stats is left out of the sandbox's own accounting.
        body: dict[str, Any] = httpx.get(f"{self.endpoint}/_sandbox/stats", timeout=5).json()
        return body


@contextmanager
def serve_sandbox(scenario: Mapping[str, Any], directory: Path, seed: int = 0) -> Iterator[Served]:
    """`codeprov sandbox --port 0` in a subprocess; yields once it has announced its port."""
    path = directory / "scenario.json"
    path.write_text(json.dumps(scenario))
    command = [CODEPROV, "sandbox", "--port", "0", "--scenario", str(path), "--seed", str(seed)]
    # Its stderr to a file: uvicorn logs a traceback for each request cut off by a worker's stop.
    with (directory / "sandbox.log").open("w") as log, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = _read_line(process.stdout, timeout=20)
            if not line:
                raise RuntimeError(f"the sandbox exited before announcing itself: {command}")
            announced = json.loads(line)
            yield Served(announced["endpoint"], announced["api_key"], announced["device_ids"])
        finally:
            stop([process])


def _read_line(stream: IO[str], timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


def stays(n: int, device_ids: Sequence[str], *, prefix: str = "stay") -> list[dict[str, str]]:
    """n stays, round-robin over the devices, starting tomorrow (inside Seam's 72 h lead)."""
    starts = datetime.now(UTC) + timedelta(days=1)
    ends = starts + timedelta(days=2)
    return [
        {"booking_id": f"{prefix}-{i:05}", "device_id": device_ids[i % len(device_ids)],
         "starts_at": starts.isoformat(), "ends_at": ends.isoformat()}
        for i in range(n)
    ]


def worker_env(redis_url: str, served: Served, **settings: object) -> dict[str, str]:
    """The environment of a worker: Redis, the sandbox, and CODEPROV_<NAME> for each setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    if "CODEPROV_HEARTBEAT_FILE" in os.environ:  # a test's own folder: not the default one
        env["CODEPROV_HEARTBEAT_FILE"] = os.environ["CODEPROV_HEARTBEAT_FILE"]
    env.update(REDIS_URL=redis_url, SEAM_ENDPOINT=served.endpoint, SEAM_API_KEY=served.api_key)
    env.update({f"CODEPROV_{k.upper()}": str(v) for k, v in settings.items()})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def enqueue(items: Sequence[Mapping[str, Any]], env: Mapping[str, str], directory: Path) -> None:
    """`codeprov enqueue --file`; raises unless every stay was enqueued."""
    path = directory / "stays.jsonl"
    path.write_text("".join(json.dumps(dict(s)) + "\n" for s in items))
    done = subprocess.run([CODEPROV, "enqueue", "--file", str(path)], env=dict(env),
                          capture_output=True, text=True, timeout=120, check=False)
    results = [json.loads(line)["result"] for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or results != ["enqueued"] * len(items):
        raise RuntimeError(f"codeprov enqueue failed ({done.returncode}): {done.stderr[-2000:]}")


def start_workers(
    n: int, command: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """n worker processes; each one's output goes to worker-<i>.log in log_dir."""
    processes = []
    for i in range(n):
        own = {"CODEPROV_HEARTBEAT_FILE": str(log_dir / f"heartbeat-{i}")}
        with (log_dir / f"worker-{i}.log").open("wb") as log:
            processes.append(subprocess.Popen(list(command), env={**env, **own}, cwd=ROOT,
                                              stdout=log, stderr=subprocess.STDOUT))
    return processes


def wait_started(processes: Sequence[subprocess.Popen[bytes]], log_dir: Path,
                 timeout: float = 60) -> None:
    """Until every worker has written its heartbeat file (it does so once connected)."""
    deadline = time.monotonic() + timeout
    beats = [log_dir / f"heartbeat-{i}" for i in range(len(processes))]
    while not all(b.exists() for b in beats):
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"workers did not start; see the worker-*.log files in {log_dir}")
        time.sleep(0.05)


def stop(processes: Sequence[subprocess.Popen[Any]], timeout: float = 10.0) -> list[int]:
    """SIGTERM each process still running, wait, SIGKILL stragglers; their exit codes."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in processes:
        try:
            codes.append(p.wait(timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes
