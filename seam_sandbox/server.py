"""Serve a sandbox over loopback TCP with uvicorn (what `codeprov sandbox` runs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from seam_sandbox.errors import DroppedConnection
from seam_sandbox.sandbox import Sandbox
from seam_sandbox.scenario import Scenario


class _CloseOnDrop:
    """Turns the app's `DroppedConnection` into a socket closed without an answer.

    Raising from an ASGI app makes uvicorn answer 500, so abort the connection's transport
    instead (reached through the bound `send` of uvicorn's request cycle).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except DroppedConnection:
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is None:
                raise
            transport.abort()
            # Let uvicorn see the connection lost, so it does not try to answer on it.
            await asyncio.sleep(0)
            await asyncio.sleep(0)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after shutting down; we stop and return instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve(host: str, port: int, scenario: Scenario, seed: int) -> None:
    """Serve until SIGINT/SIGTERM, after printing one JSON line: endpoint, api_key, device_ids.

    `port=0` picks a free port; the line carries the real one. Returns after a clean shutdown.
    """
    asyncio.run(_serve(Sandbox(scenario, seed=seed), host, port))


async def _serve(sandbox: Sandbox, host: str, port: int) -> None:
    config = uvicorn.Config(
        _CloseOnDrop(sandbox.app), host=host, port=port, access_log=False, log_level="warning"
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, setattr, server, "should_exit", True)
    # Webhooks are delivered from this loop, next to the API.
    delivery = asyncio.create_task(sandbox.deliver_forever())
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # start-up failed (port taken…): raise its error
            raise SystemExit(1)
        await asyncio.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    line = {
        "endpoint": f"http://{host}:{bound_port}",
        "api_key": sandbox.api_key,
        "device_ids": sandbox.device_ids,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    try:
        await task
    finally:
        delivery.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivery
