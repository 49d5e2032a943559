"""A real HTTP webhook receiver on 127.0.0.1 (Starlette under uvicorn) for the sandbox's tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    """Records every POST; answers the queued `statuses` first, then 204."""

    statuses: deque[int] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        self.received.append(Received(await request.body(), dict(request.headers)))
        return Response(status_code=self.statuses.popleft() if self.statuses else 204)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test process keeps its own handlers
        yield


@contextlib.asynccontextmanager
async def serve(receiver: Receiver) -> AsyncIterator[str]:
    """Serve `receiver` on a free loopback port; yields its webhook URL."""
    app = Starlette(routes=[Route("/webhooks/seam", receiver.endpoint, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "receiver did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/webhooks/seam"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def wait_for(receiver: Receiver, count: int, timeout: float = 10.0) -> None:
    """Until `receiver` has `count` requests (bounded: fails after `timeout` real seconds)."""
    deadline = time.monotonic() + timeout
    while len(receiver.received) < count:
        assert time.monotonic() < deadline, f"got {len(receiver.received)} of {count} requests"
        await asyncio.sleep(0.01)
