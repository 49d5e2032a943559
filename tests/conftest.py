"""Shared fixtures: a real redis-server (ours, or REDIS_URL), wiped before each test; each
test's workers beat into its own folder."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from worker.localredis import LocalRedis


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def heartbeat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Workers started by a test, in process or as a child process (they inherit os.environ),
    beat into the test's own folder: the default /tmp/codeprov-heartbeat may be a real
    worker's, and a test worker deletes its file when it stops."""
    path = tmp_path / "heartbeat"
    monkeypatch.setenv("CODEPROV_HEARTBEAT_FILE", str(path))
    return path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL when set (its database is flushed by the tests!), else a private server."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = LocalRedis(directory=str(tmp_path_factory.mktemp("redis"))).start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
