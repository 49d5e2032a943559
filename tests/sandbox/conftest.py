"""Sandbox fixtures: a one-lock sandbox on a frozen clock, and clients over ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sandbox_helpers import MakeClient, frozen_sandbox

from seam_sandbox import Sandbox


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sb() -> Sandbox:
    return frozen_sandbox()


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Builds clients for any sandbox (`key=""` sends no Authorization header)."""
    clients: list[httpx.AsyncClient] = []

    def make(sandbox: Sandbox, *, key: str | None = None) -> httpx.AsyncClient:
        token = sandbox.api_key if key is None else key
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sandbox.app),
            base_url="http://sandbox",
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(sb: Sandbox, make_client: MakeClient) -> httpx.AsyncClient:
    return make_client(sb)
