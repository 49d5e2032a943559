"""Helpers shared by the sandbox tests (a module, not a conftest, so tests can import it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from seam_sandbox import DeviceSpec, Latency, Sandbox, SandboxClock, Scenario

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LOCK = "lock-1"
MakeClient = Callable[..., httpx.AsyncClient]


def frozen_sandbox(
    scenario: Scenario | None = None,
    seed: int = 0,
    monotonic: Callable[[], float] = time.monotonic,
) -> Sandbox:
    """A sandbox whose clock moves only with `advance()`, starting at T0; one 10 s lock."""
    scenario = scenario or Scenario(devices=[DeviceSpec(id=LOCK, latency=Latency.fixed(10))])
    clock = SandboxClock(speed=0, start=T0)
    return Sandbox(scenario, seed=seed, clock=clock, monotonic=monotonic)


def at(seconds: float) -> str:
    """The ISO timestamp `seconds` after T0."""
    moment = T0 + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeMonotonic:
    """A real-time source the test moves by hand (rate limits and stats use real time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/access_codes/create", json={"device_id": LOCK} | body)


async def code_of(client: httpx.AsyncClient, access_code_id: str) -> dict[str, Any]:
    response = await client.post("/access_codes/get", json={"access_code_id": access_code_id})
    assert response.status_code == 200, response.text
    code: dict[str, Any] = response.json()["access_code"]
    return code


def mutations(code: dict[str, Any]) -> list[str]:
    return [m["mutation_code"] for m in code["pending_mutations"]]
