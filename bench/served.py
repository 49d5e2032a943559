"""The sandbox served on loopback from a thread of the benchmark, logging when requests arrive.

Worker processes reach it over TCP like a real Seam; the benchmark keeps the `Sandbox` object,
so it can read arrival times (for enqueue-to-first-request latency) without polling stats.

`indexed(sandbox)` is a benchmark-only shortcut: the sandbox finds a device's live codes by
scanning every code it holds, so generate_code and create cost O(all codes) and 100,000 stays
take hours. It keeps, per device, the codes created on it; answers are unchanged.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from seam_sandbox import Sandbox
from worker.localredis import free_port


@dataclass
class Arrivals:
    """(time.monotonic(), path) of each Seam request, in arrival order."""

    seen: list[tuple[float, str]] = field(default_factory=list)

    def first_after(self, t: float, path: str) -> float | None:
        return next((at for at, p in reversed(self.seen) if p == path and at >= t), None)

    def count(self, path: str | None = None) -> int:
        return sum(1 for _, p in self.seen if path is None or p == path)


class _Stamped:
    def __init__(self, app: ASGIApp, arrivals: Arrivals) -> None:
        self.app, self.arrivals = app, arrivals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(("/access_codes/", "/devices/")):
            self.arrivals.seen.append((time.monotonic(), path))
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class ServedSandbox:
    sandbox: Sandbox
    endpoint: str
    arrivals: Arrivals


@contextmanager
def serve_in_thread(sandbox: Sandbox) -> Iterator[ServedSandbox]:
    """uvicorn on 127.0.0.1 in a daemon thread; stopped on exit."""
    arrivals = Arrivals()
    port = free_port()
    config = uvicorn.Config(_Stamped(sandbox.app, arrivals), host="127.0.0.1", port=port,
                            access_log=False, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the sandbox server did not start")
        time.sleep(0.01)
    try:
        yield ServedSandbox(sandbox, f"http://127.0.0.1:{port}", arrivals)
    finally:
        server.should_exit = True
        thread.join(10)


