"""Contract fixtures: one session-wide Seam fake, a fresh sandbox per test, clients for either.

Without node/npm (or when npm cannot install the fake) the `seam_fake` cases are skipped with
the reason, and the sandbox cases still run; so are the checks against Seam's OpenAPI spec. In
CI (`CI` set) that is a failure instead: the contract must actually be checked there.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from seam_servers import (
    FakeSeam,
    FakeServer,
    FakeUnavailable,
    MakeClient,
    SandboxServer,
    Server,
    install_fake,
)
from seam_spec import SeamSpec, load_openapi

from worker.limiter import Budgets, Limiter, Rate
from worker.seam import SeamClient


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def seam_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSeam]:
    """Seam's own fake, installed once (cached) and running for the whole session."""
    try:
        server_js = install_fake()
    except FakeUnavailable as exc:
        if _in_ci():
            pytest.fail(f"{exc} (CI is set: the contract tests must not be skipped)", pytrace=False)
        pytest.skip(f"Seam's fake is unavailable: {exc}")
    fake = FakeSeam.start(server_js, tmp_path_factory.mktemp("seam-fake") / "server.log")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def seam_spec() -> SeamSpec:
    """Seam's OpenAPI spec from npm `@seamapi/types` (installed and exported once, cached)."""
    try:
        return SeamSpec(load_openapi())
    except FakeUnavailable as exc:
        if _in_ci():
            pytest.fail(f"{exc} (CI is set: the spec checks must not be skipped)", pytrace=False)
        pytest.skip(f"Seam's OpenAPI spec is unavailable: {exc}")


@pytest.fixture(params=["sandbox", "seam_fake"])
def server(request: pytest.FixtureRequest) -> Server:
    if request.param == "seam_fake":
        return FakeServer(request.getfixturevalue("seam_fake"))
    return SandboxServer()


@pytest.fixture
async def make_client(server: Server, redis: Redis) -> AsyncIterator[MakeClient]:
    """Builds our SeamClient for the server (`api_key=` overrides its key); closes them all."""
    limiter = Limiter(redis, Budgets(Rate(1000, 1, 100), {}))
    clients: list[SeamClient] = []

    def make(api_key: str | None = None) -> SeamClient:
        clients.append(server.client(limiter, api_key))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def seam(make_client: MakeClient) -> SeamClient:
    return make_client()
