"""The intake stream: plain XADD in, each stay once, bad entries set aside, nothing lost."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Rig
from redis.asyncio import Redis

from bench.cluster import CODEPROV, serve_sandbox, worker_env
from jobs.intake import GROUP, Intake
from jobs.state import Phase, StayStore
from seam_sandbox import DeviceSpec, Latency, Scenario
from worker.localredis import LocalRedis

pytestmark = pytest.mark.anyio
KEY, DEAD = "codeprov:intake", "codeprov:intake:dead"


def one_lock() -> Scenario:
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1))])


def entry(rig: Rig, booking_id: str, **extra: str) -> dict[Any, Any]:
    stay = rig.stay(booking_id)
    return {k: str(v) for k, v in {**stay, **extra}.items()}


def intake(rig: Rig, consumer: str = "c1", claim_idle: float = 60.0) -> Intake:
    return Intake(rig.pool, consumer, rig.sandbox.clock.now, claim_idle=claim_idle, block=0.05)


async def test_plain_xadd_entries_are_provisioned(redis: Redis, redis_url: str) -> None:
    """Entries written with a plain client become scheduled stays; the stream is then trimmed."""
    async with Rig(redis_url, one_lock()) as rig:
        plain = Redis.from_url(redis_url)
        for i in range(3):
            await plain.xadd(KEY, entry(rig, f"B{i}", revision=str(i)))
        await plain.aclose()
        consumer = intake(rig)
        await consumer.ensure_group()
        assert await consumer.drain() == 3
        await rig.run()
        for i in range(3):
            assert (await rig.state(f"B{i}")).state is Phase.SCHEDULED
        assert await rig.pool.xlen(KEY) == 0


async def test_duplicate_entries_are_harmless(redis: Redis, redis_url: str) -> None:
    """The same entry twice (at-least-once delivery) provisions the stay once."""
    async with Rig(redis_url, one_lock()) as rig:
        e = entry(rig, "B1")
        await rig.pool.xadd(KEY, e)
        await rig.pool.xadd(KEY, e)
        consumer = intake(rig)
        await consumer.ensure_group()
        await consumer.drain()
        await rig.run()
        assert len(rig.sandbox.codes_on("lock-1")) == 1


async def test_consumer_killed_before_ack_is_reclaimed(redis: Redis, redis_url: str) -> None:
    """An entry read by a consumer that died is claimed by another and provisioned once."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.pool.xadd(KEY, entry(rig, "B1"))
        survivor = intake(rig, "survivor", claim_idle=0.2)
        await survivor.ensure_group()
        read = await rig.pool.xreadgroup(GROUP, "dead", {KEY: ">"}, count=10)
        assert len(read[0][1]) == 1  # read, never acknowledged: the consumer died here
        assert await survivor.drain() == 0  # not idle long enough yet
        await asyncio.sleep(0.3)
        assert await survivor.drain() == 1
        await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        assert (await rig.pool.xpending(KEY, GROUP))["pending"] == 0
        assert len(rig.sandbox.codes_on("lock-1")) == 1


async def test_invalid_entries_go_to_dead_letter(redis: Redis, redis_url: str) -> None:
    """Bad entries land in the dead-letter stream with a reason; the ones behind them go on."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.pool.xadd(KEY, {"booking_id": "bad1"})  # no device_id
        await rig.pool.xadd(KEY, {"booking_id": "bad2", "device_id": "lock-1", "colour": "x"})
        await rig.pool.xadd(KEY, {b"booking_id": b"\xff\xfe", b"device_id": b"lock-1"})
        await rig.pool.xadd(KEY, entry(rig, "good"))
        consumer = intake(rig)
        await consumer.ensure_group()
        assert await consumer.drain() == 4
        dead = await rig.pool.xrange(DEAD)
        reasons = [fields[b"reason"].decode() for _, fields in dead]
        assert len(reasons) == 3
        assert "device_id: Field required" in reasons[0]
        assert "colour: unknown field" in reasons[1]
        assert "not UTF-8" in reasons[2]
        assert dead[0][1][b"field:booking_id"] == b"bad1"
        assert (await rig.pool.xpending(KEY, GROUP))["pending"] == 0
        assert await StayStore(rig.pool).get("good") is not None


async def test_trim_keeps_unacknowledged_entries(redis: Redis, redis_url: str) -> None:
    """Trimming drops acknowledged entries only; an entry still pending stays."""
    async with Rig(redis_url, one_lock()) as rig:
        consumer = intake(rig)
        await consumer.ensure_group()
        await rig.pool.xadd(KEY, entry(rig, "B1"))
        await rig.pool.xreadgroup(GROUP, "slow", {KEY: ">"}, count=1)  # pending, not acked
        await rig.pool.xadd(KEY, entry(rig, "B2"))
        await consumer.drain()
        assert await rig.pool.xlen(KEY) == 2  # B1 pending holds the floor
        assert await StayStore(rig.pool).get("B2") is not None


async def test_burst_of_ten_thousand_entries(redis: Redis, redis_url: str) -> None:
    """10,000 entries written at once are all taken in: 10,000 stays, nothing pending."""
    async with Rig(redis_url, one_lock()) as rig:
        stay: dict[Any, Any] = rig.stay("x")
        async with rig.pool.pipeline(transaction=False) as pipe:
            for i in range(10_000):
                pipe.xadd(KEY, {**stay, "booking_id": f"B{i:05}"})
            await pipe.execute()
        consumers = [intake(rig, f"c{i}") for i in range(4)]
        await consumers[0].ensure_group()
        started = time.monotonic()
        counts = await asyncio.gather(*(c.drain() for c in consumers))
        print(f"10,000 intake entries in {time.monotonic() - started:.1f}s by 4 consumers")
        assert sum(counts) == 10_000
        keys = [k async for k in rig.pool.scan_iter(match="codeprov:stay:*", count=1000)]
        assert len(keys) == 10_000
        assert (await rig.pool.xpending(KEY, GROUP))["pending"] == 0


@pytest.mark.slow
def test_worker_burst_drains_the_stream(tmp_path: Path) -> None:
    """`codeprov worker --burst` takes in the stream, provisions, and exits 0."""
    import subprocess

    import redis as redis_sync

    server = LocalRedis().start()
    latency = {"kind": "fixed", "seconds": 0.2}
    scenario = {"device_count": 2, "device_defaults": {"latency": latency}}
    try:
        with serve_sandbox(scenario, tmp_path) as served:
            client: Any = redis_sync.Redis.from_url(server.url)
            for i in range(5):
                client.xadd(KEY, {"booking_id": f"S{i}", "device_id": served.device_ids[i % 2]})
            env = worker_env(server.url, served, poll_initial=0.2, rate_per_second=100,
                             rate_burst=10, device_creates_per_minute=600)
            done = subprocess.run([CODEPROV, "worker", "--burst"], env=env, timeout=120,
                                  capture_output=True, check=False)
            assert done.returncode == 0, done.stderr[-2000:]
            states = [json.loads(client.get(f"codeprov:stay:S{i}") or b"{}").get("state")
                      for i in range(5)]
            assert states == ["scheduled"] * 5
            client.close()
    finally:
        server.cleanup()
