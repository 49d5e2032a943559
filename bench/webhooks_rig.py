"""Our webhook receiver on loopback, registered with a sandbox: what `bench events` and
`bench guarded` share.

`receiving()` binds 127.0.0.1 on a free port, registers `http://127.0.0.1:<port>/webhooks/seam`
with the sandbox's `/webhooks/create` (every event type), and serves `worker.webhook.webhook_app`
with the `whsec_` secret the sandbox answered, by uvicorn in this process. The sandbox then
delivers Svix-signed events over real HTTP; the receiver verifies them as in production.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from pydantic import SecretStr
from redis.asyncio import Redis

from seam_sandbox import Sandbox
from worker.settings import Settings
from worker.webhook import PATH, webhook_app


async def register(sandbox: Sandbox, url: str) -> str:
    """Register `url` for every event type; the webhook's secret."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox",
        headers={"authorization": f"Bearer {sandbox.api_key}"},
    ) as client:
        answer = await client.post("/webhooks/create", json={"url": url})
        answer.raise_for_status()
        return str(answer.json()["webhook"]["secret"])


@asynccontextmanager
async def receiving(sandbox: Sandbox, settings: Settings, redis: Redis) -> AsyncIterator[str]:
    """Serve the receiver while inside; yields its URL. Delivery is the caller's (the sandbox's
    `delivering()` in real time, `deliver_once()` in simulated time)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}"
    secret = await register(sandbox, url)
    app = webhook_app(redis, settings.model_copy(
        update={"seam_webhook_secret": SecretStr(secret)}))
    server = uvicorn.Server(uvicorn.Config(app, access_log=False, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task  # raises why it could not start
                raise RuntimeError("the webhook receiver stopped before it started")
            await asyncio.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
