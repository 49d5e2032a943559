"""Redis outages on loopback for worker-process tests: a host that drops our SYNs, a worker
process started against it, and its heartbeat file read the way a probe reads it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.cluster import CODEPROV, ROOT

BEAT = 0.2  # CODEPROV_HEARTBEAT_INTERVAL of the workers under test, in seconds


@contextmanager
def dropping_port() -> Iterator[int]:
    """A loopback port whose SYNs go unanswered, as a Redis host that is gone.

    listen(0) and one connection never accepted fill its accept queue: Linux then drops
    further SYNs, so a connect times out (it is not refused).
    """
    server = socket.socket()
    filler = socket.socket()
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        filler.connect(server.getsockname())
        yield int(server.getsockname()[1])
    finally:
        filler.close()
        server.close()


def worker_env(tmp_path: Path, port: int, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEPROV_", "SEAM_"))}
    return env | {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "SEAM_API_KEY": "seam_test_key",
                  "CODEPROV_HEARTBEAT_FILE": str(tmp_path / "heartbeat"),
                  "CODEPROV_HEARTBEAT_INTERVAL": str(BEAT), "CODEPROV_LOG_FORMAT": "json",
                  **settings}


def start(command: Sequence[str], env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    with (tmp_path / "worker.log").open("wb") as log:
        return subprocess.Popen(list(command), env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)


def start_worker(env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    return start([CODEPROV, "worker"], env, tmp_path)


def start_worker_as_pid_1(env: dict[str, str], tmp_path: Path) -> tuple[
    subprocess.Popen[bytes], int
]:
    """`codeprov worker` as PID 1 of a new PID namespace (a container without an init); the
    unshare process, and the worker's pid as seen from here (where the signal comes from)."""
    unshare = shutil.which("unshare") or "unshare"
    proc = start([unshare, "--fork", "--pid", "--mount-proc", CODEPROV, "worker"], env, tmp_path)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 10
    while not children.read_text().split():
        assert time.monotonic() < deadline, "unshare started no worker"
        time.sleep(0.01)
    return proc, int(children.read_text().split()[0])


def pid_namespaces_work() -> bool:
    done = subprocess.run(["unshare", "--fork", "--pid", "--mount-proc", "true"],
                          capture_output=True, check=False)
    return done.returncode == 0


def state(env: dict[str, str]) -> dict[str, Any]:
    try:
        record = json.loads(Path(env["CODEPROV_HEARTBEAT_FILE"]).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def wait_for(condition: Callable[[], bool], timeout: float, tmp_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, log(tmp_path)[-2000:]
        time.sleep(0.02)


def wait_phase(env: dict[str, str], phase: str, timeout: float, tmp_path: Path) -> None:
    """Until the worker's heartbeat file says it is waiting for Redis in `phase`."""
    wait_for(lambda: state(env).get("phase") == phase, timeout, tmp_path)


def health(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CODEPROV, "health"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False)


def log(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


class HangingProxy:
    """A loopback TCP proxy to a real Redis that can hang: after `hang()` it forwards nothing
    and answers no new connection, as a Redis host gone while connections stay open."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.hung = threading.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> HangingProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop).result(10)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *_: object) -> None:
        async def close() -> None:
            assert self.server is not None
            self.server.close()
            # Until none is left: a connection accepted meanwhile starts a task of its own.
            while tasks := {t for t in self.tasks if not t.done()}:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.sleep(0.01)  # closed transports finish on the next iterations

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def hang(self) -> None:
        self.hung.set()

    def resume(self) -> None:
        """Forward new connections again; the ones held while hung stay dead, as after a
        partition heals (their peer forgot them)."""
        self.hung.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Held here: asyncio keeps only a weak reference, and a task waiting on nothing else
        # would be garbage-collected while pending (its sockets left unclosed).
        self.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.hung.is_set():
                await asyncio.Event().wait()  # accepted, never answered
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer),
                                 return_exceptions=True)
        finally:
            for side in (writer, upstream):
                if side is not None:
                    side.close()
                    with contextlib.suppress(Exception):  # closed: let the transport finish
                        await side.wait_closed()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if self.hung.is_set():
                await asyncio.Event().wait()  # hold the connection, forward nothing
            sink.write(data)
            await sink.drain()
