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
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from seam_sandbox import Sandbox
from seam_sandbox.codes import AccessCode
from seam_sandbox.state import SandboxState
from seam_sandbox.validation import CreateInput
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


class _IndexedState(SandboxState):
    _by_device: defaultdict[str, list[AccessCode]]

    def live_codes(self, device_id: str | None = None) -> list[AccessCode]:
        if device_id is None:
            return super().live_codes()
        now = self.now()
        return [c for c in self._by_device[device_id] if not c.gone(now, self.timeline)]

    def create(self, req: CreateInput) -> AccessCode:
        code = super().create(req)
        self._by_device[code.device_id].append(code)
        return code


def indexed(sandbox: Sandbox) -> Sandbox:
    """The same sandbox, finding a device's codes in O(codes on that device)."""
    state: Any = sandbox._state
    if state.codes:
        raise ValueError("index a sandbox before it holds codes")
    state.__class__ = _IndexedState
    state._by_device = defaultdict(list)
    return sandbox
