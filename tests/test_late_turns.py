"""A reserved create turn used late does not crowd the turns after it into Seam's minute.

Steps run by hand (`advance_stay`, as a worker would) at chosen instants of one injected clock,
shared by the limiter on real Redis, the steps, and the sandbox's rate limit: a worker that picks
a job up late is a step called later than its record asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from harness import FAST
from redis.asyncio import Redis

from jobs.enqueue import enqueue_stay
from jobs.pipeline import JobInfo, advance_stay
from jobs.state import StayState, StayStore
from seam_sandbox import DeviceSpec, Latency, Sandbox, SandboxClock, Scenario
from worker.deps import Deps
from worker.limiter import Limiter
from worker.queue import connect
from worker.settings import Settings
from worker.wiring import budgets, build_deps

pytestmark = pytest.mark.anyio

STAYS = 12  # one lock, 10 creates a minute: the 11th and 12th turns are a minute out


@dataclass
class Clock:
    """One instant for everything, moved only by the test."""

    at: datetime

    def now(self) -> datetime:
        return self.at

    def ms(self) -> int:
        return int(self.at.timestamp() * 1000)

    def seconds(self) -> float:
        return self.at.timestamp()


async def step(deps: Deps, store: StayStore, booking_id: str) -> None:
    """Run the step the record expects, now."""
    state = await last(store, booking_id)
    await advance_stay(deps, booking_id, state.seq, JobInfo(f"t:{booking_id}:{state.seq}"))


async def last(store: StayStore, booking_id: str) -> StayState:
    state = await store.get(booking_id)
    assert state is not None
    return state


async def due(store: StayStore, booking_id: str) -> datetime:
    """When the stay's record asks for its next step."""
    at = (await last(store, booking_id)).next_check_at
    assert at is not None
    return at


async def test_late_turn_is_taken_again(redis: Redis, redis_url: str) -> None:
    """Twelve stays take turns on a lock that allows ten creates a minute; the second stay's
    worker comes back a whole turn late, with the third: its turn is given up and a new one
    taken, so Seam never answers 429 and every stay gets its one code."""
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    sandbox = Sandbox(
        Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0))]),
        clock=SandboxClock(speed=0, start=clock.at),
        monotonic=clock.seconds,  # Seam's per-minute window on our clock
    )
    fields: dict[str, Any] = {**FAST, "device_creates_per_minute": 10, "rate_max_sleep": 0.0}
    settings = Settings(
        redis_url=redis_url, seam_api_key=sandbox.api_key, seam_endpoint="http://sandbox", **fields
    )
    pool = await connect(settings)

    def limiter(redis: Redis, s: Settings) -> Limiter:
        return Limiter(redis, budgets(s), prefix=s.key_prefix, max_sleep=0.0, now_ms=clock.ms)

    deps = build_deps(settings, pool, seam_transport=httpx.ASGITransport(app=sandbox.app),
                      clock=clock.now, limiter_factory=limiter)
    store = deps.store
    try:
        ids = [f"B{i}" for i in range(STAYS)]
        for booking_id in ids:
            stay = {"booking_id": booking_id, "device_id": "lock-1",
                    # Within a day: urgent, so every turn is handed out at once (no horizon).
                    "starts_at": (clock.at + timedelta(hours=2)).isoformat(),
                    "ends_at": (clock.at + timedelta(days=3)).isoformat()}
            assert (await enqueue_stay(pool, stay, now=clock.at)).result == "enqueued"
            await step(deps, store, booking_id)  # B0 creates now; the others reserve a turn
        turns = {b: await due(store, b) for b in ids[1:]}
        late = ids[1]
        order = sorted(ids[2:], key=lambda b: turns[b])
        for booking_id in order:
            clock.at = turns[booking_id]
            if booking_id == ids[2]:
                await step(deps, store, late)  # its worker was busy: a turn late, with B2's
            await step(deps, store, booking_id)
        if not (await last(store, late)).state.is_final:
            clock.at = await due(store, late)  # its new turn, after everyone else's
            await step(deps, store, late)
        creates = sandbox.stats()["requests"]["/access_codes/create"]
        names = sorted(c["name"] for c in sandbox.codes_on("lock-1"))
    finally:
        await deps.seam.aclose()
        await pool.aclose()
    assert creates == {"200": STAYS}
    assert names == sorted(f"Stay {b}" for b in ids)
