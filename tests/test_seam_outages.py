"""Seam outage storms: 5xx windows, answers slower than our timeout, dropped connections, 429s.

Each storm ends with every stay scheduled (arq's max_tries never ends one), without a tight
loop: the requests Seam sees per stay stay within what the outage's length and our backoff
allow. Real Redis and arq workers; the sandbox in-process (ASGITransport), or on loopback where
the test needs a real socket timeout (ASGITransport has none).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from bench.cluster import serve_sandbox, stays
from jobs.enqueue import enqueue_stay
from jobs.state import Phase, StayState, StayStore
from seam_sandbox import DeviceSpec, Drop, Latency, Outage, RateLimits, Scenario
from worker.queue import connect
from worker.runtime import make_worker
from worker.settings import Settings

pytestmark = pytest.mark.anyio

STAYS = 8
LOCKS = [f"lock-{i}" for i in range(4)]
OUTAGE = 3.0  # seconds of 5xx


def scenario(**chaos: Any) -> Scenario:
    locks = [DeviceSpec(id=lock, latency=Latency.fixed(0.2)) for lock in LOCKS]
    return Scenario(devices=locks, rate_limits=chaos.pop("rate_limits", None) or
                    RateLimits(per_device=False), **chaos)


async def provision(rig: Rig, timeout: float = 30.0) -> list[StayState]:
    """Enqueue STAYS stays over the locks, run two burst workers until the queue is empty."""
    for i in range(STAYS):
        assert (await rig.enqueue(rig.stay(f"B{i}", device=i % 4))).result == "enqueued"
    await rig.run(workers=2, timeout=timeout)
    return [await rig.state(f"B{i}") for i in range(STAYS)]


def answered(stats: dict[str, Any], status: str) -> int:
    return sum(by_status.get(status, 0) for by_status in stats["requests"].values())


def phases(states: list[StayState]) -> list[tuple[Phase, str | None]]:
    return [(s.state, s.failure.reason if s.failure else None) for s in states]


SCHEDULED = [(Phase.SCHEDULED, None)] * STAYS


@pytest.mark.parametrize(
    "outage",
    [Outage(start=0, duration=OUTAGE, status=503), Outage(start=0, duration=OUTAGE, status=500,
                                                          body="seam")],
    ids=["503-empty", "500-seam-body"],
)
async def test_5xx_outage_backs_off_then_schedules(
    redis: Redis, redis_url: str, outage: Outage
) -> None:
    """A 3 s 5xx window: every stay is scheduled, each retrying about once a second meanwhile."""
    cap = 1.0  # transient backoff: base 1 s, so each retry waits 0.8-1 s (20 % jitter)
    async with Rig(redis_url, scenario(outages=[outage]),
                   overrides={"transient_backoff_max": cap}) as rig:
        states = await provision(rig)
        stats = rig.sandbox.stats()
    failures = answered(stats, str(outage.status))
    assert phases(states) == SCHEDULED
    assert failures >= STAYS  # each stay met the outage
    assert failures <= STAYS * (math.ceil(OUTAGE / (0.8 * cap)) + 1)
    assert stats["requests_total"] <= failures + STAYS * 12  # the rest: generate, create, polls


async def test_transient_failures_never_spend_arq_tries(redis: Redis, redis_url: str) -> None:
    """More 5xx per stay than arq's max_tries (5): each retry is a new step, every job_try 1."""
    async with Rig(redis_url, scenario(outages=[Outage(start=0, duration=OUTAGE)])) as rig:
        with capture_logs() as logs:
            states = await provision(rig)
    failed = [e for e in logs if e["event"] == "seam.request_failed"]
    assert phases(states) == SCHEDULED
    assert max(e["transient_failures"] for e in failed) > 5
    assert {e.get("job_try") for e in logs if "job_try" in e} == {1}
    assert not [e for e in logs if e["event"] == "job.crashed"]


async def test_dropped_connections_converge_one_code_each(redis: Redis, redis_url: str) -> None:
    """30 % of connections dropped, half the creates after taking effect: one code per stay."""
    drops = [Drop(probability=0.5, routes=["/access_codes/create"], when="after"),
             Drop(probability=0.3)]
    async with Rig(redis_url, scenario(drops=drops), seed=3) as rig:
        states = await provision(rig)
        stats = rig.sandbox.stats()
        codes = sum(len(rig.sandbox.codes_on(d)) for d in rig.devices)
    assert phases(states) == SCHEDULED
    assert stats["connections_dropped"] >= STAYS // 2
    assert stats["duplicate_names"] == {} and codes == STAYS
    assert stats["requests_total"] <= STAYS * 20


@pytest.mark.parametrize("retry_after", [True, False], ids=["retry-after", "no-retry-after"])
async def test_429_storm_pauses_then_schedules(
    redis: Redis, redis_url: str, retry_after: bool
) -> None:
    """Seam lets 10 requests/s through where we budget 1000/s: all scheduled, few 429s."""
    limits = RateLimits(per_device=False, per_key_rps=10, per_key_burst=5,
                        retry_after=retry_after)
    async with Rig(redis_url, scenario(rate_limits=limits),
                   overrides={"poll_initial": 0.3, "poll_max": 0.6}) as rig:
        with capture_logs() as logs:
            states = await provision(rig, timeout=60)
        stats = rig.sandbox.stats()
    assert phases(states) == SCHEDULED
    assert stats["rate_limited"] >= 1  # the storm did happen
    # A 429 pauses every worker (a shared penalty key): no stay keeps knocking.
    assert stats["rate_limited"] <= min(answered(stats, "200"), 3 * STAYS)
    assert not [e for e in logs if e["event"] == "job.crashed"]


async def test_outage_past_deadline_fails_not_scheduled_in_time(
    redis: Redis, redis_url: str
) -> None:
    """Seam down for good: stays fail not_scheduled_in_time at their deadline, nothing crashes."""
    overrides = {"schedule_deadline": 2.0, "transient_backoff_max": 0.5}
    async with Rig(redis_url, scenario(outages=[Outage(start=0)]), overrides=overrides) as rig:
        for i in range(STAYS):  # ongoing codes: the deadline counts from the enqueue
            await rig.enqueue({"booking_id": f"B{i}", "device_id": LOCKS[i % 4]})
        with capture_logs() as logs:
            await rig.run(workers=2, timeout=30)
        states = [await rig.state(f"B{i}") for i in range(STAYS)]
        stats = rig.sandbox.stats()
    assert phases(states) == [(Phase.FAILED, "not_scheduled_in_time")] * STAYS
    assert all(s.failure and "not scheduled on the lock by" in s.failure.message for s in states)
    assert not [e for e in logs if e["event"] in ("job.crashed", "job.rejected")]
    assert stats["requests_total"] <= STAYS * (math.ceil(2.0 / (0.8 * 0.5)) + 2)


async def test_answers_slower_than_http_timeout_converge(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    """Creates answered after our 0.5 s timeout (they still take effect): one code per stay."""
    slow = {"seconds": 1.0, "routes": ["/access_codes/create"]}
    with serve_sandbox({**_loopback_scenario(), "slow": [slow]}, tmp_path) as served:
        settings = Settings(
            redis_url=redis_url, seam_api_key=served.api_key, seam_endpoint=served.endpoint,
            http_timeout=0.5, poll_initial=0.1, poll_max=0.3, transient_backoff_max=0.5,
            rate_per_second=1000, rate_burst=100, device_creates_per_minute=60_000,
        )
        states = await _run_loopback(settings, stays(STAYS, LOCKS))
        stats = served.stats()
    assert phases(states) == SCHEDULED
    assert stats["duplicate_names"] == {}
    assert sum(stats["codes_per_device"].values()) == STAYS
    # Every create took effect (the sandbox answered 200 to a client gone); a re-sent one with
    # the same PIN meets 409 and the stay adopts the code it finds by name.
    creates = stats["requests"]["/access_codes/create"]
    assert creates["200"] == STAYS and set(creates) <= {"200", "409"}
    assert sum(creates.values()) <= 3 * STAYS


class LateCreate(httpx.AsyncBaseTransport):
    """The first create gets no answer in time; Seam applies it late, just after the next list."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.held, self.first = inner, list[httpx.Request](), True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/access_codes/create" and self.first:
            self.first = False
            self.held.append(request)
            raise httpx.ReadTimeout("no answer in time", request=request)
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/access_codes/list":
            for late in self.held:
                await (await self.inner.handle_async_request(late)).aread()
            self.held.clear()
        return response


@dataclass
class LateCreateRig(Rig):
    late: LateCreate | None = None

    def transport(self) -> httpx.AsyncBaseTransport:
        self.late = self.late or LateCreate(super().transport())
        return self.late


async def test_create_landing_after_our_look_is_adopted_not_doubled(
    redis: Redis, redis_url: str
) -> None:
    """A lost create that lands after the re-run looked: its 409 leads to it, never a 2nd code."""
    async with LateCreateRig(redis_url, scenario()) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run(workers=1)
        state = await rig.state("B1")
        codes = rig.sandbox.codes_on("lock-0")
    assert (state.state, [c["name"] for c in codes]) == (Phase.SCHEDULED, ["Stay B1"])
    assert state.access_code_id == codes[0]["access_code_id"]


def _loopback_scenario() -> dict[str, Any]:
    return {"devices": [{"id": lock, "latency": {"kind": "fixed", "seconds": 0.2}}
                        for lock in LOCKS], "rate_limits": {"per_device": False}}


async def _run_loopback(settings: Settings, batch: list[dict[str, str]]) -> list[StayState]:
    """Enqueue the stays; two burst workers talk to Seam over real HTTP until the queue is empty."""
    pool = await connect(settings)
    try:
        for stay in batch:
            assert (await enqueue_stay(pool, stay)).result == "enqueued"
        workers = [make_worker(settings, burst=True, poll_delay=0.01, handle_signals=False)
                   for _ in range(2)]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.async_run() for w in workers)), 30)
        finally:
            for w in workers:
                await w.close()
        store = StayStore(pool)
        found = [await store.get(s["booking_id"]) for s in batch]
        return [s for s in found if s is not None]
    finally:
        await pool.aclose()
