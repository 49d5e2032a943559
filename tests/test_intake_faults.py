"""Intake under faults: entries that raise, a lost consumer group, a crashed consumer, trimming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from harness import Rig
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError
from structlog.testing import capture_logs

from jobs.intake import GROUP, Intake
from jobs.state import StayStore
from seam_sandbox import DeviceSpec, Latency, Scenario
from worker.health import MISSED_BEATS, check, index_key, worker_key
from worker.queue import connect
from worker.runtime import make_worker

pytestmark = pytest.mark.anyio
KEY, DEAD = "codeprov:intake", "codeprov:intake:dead"
BEAT = 0.1  # heartbeat interval of the worker under test, in seconds


def one_lock() -> Scenario:
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.1))])


def entry(rig: Rig, booking_id: str, **extra: str) -> dict[Any, Any]:
    return {k: str(v) for k, v in {**rig.stay(booking_id), **extra}.items()}


def intake(rig: Rig, consumer: str = "c1", claim_idle: float = 60.0) -> Intake:
    return Intake(rig.pool, consumer, rig.sandbox.clock.now, claim_idle=claim_idle, block=0.05)


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Poll `predicate` until it returns something truthy; return that."""
    async with asyncio.timeout(timeout):
        while not (found := await predicate()):
            await asyncio.sleep(0.02)
    return found


async def dead_letters(redis: Redis) -> dict[str, str]:
    """booking_id -> reason, for each dead-lettered entry."""
    return {
        fields[b"field:booking_id"].decode(): fields[b"reason"].decode()
        for _, fields in await redis.xrange(DEAD)
    }


async def test_entries_that_raise_are_dead_lettered_and_the_stream_moves_on(
    redis: Redis, redis_url: str
) -> None:
    """Each entry whose handling raises (any exception) is dead-lettered with a short reason and
    acknowledged, and the good entry behind them is applied."""
    async with Rig(redis_url, one_lock()) as rig:
        await redis.set("codeprov:stay:corrupt", "{not json")
        await redis.set("codeprov:cancelled:tomb", "not-a-revision")
        await redis.xadd(KEY, entry(rig, "superscript", revision="²"))
        await redis.xadd(KEY, entry(rig, "huge", revision="9" * 5000))
        far = {"starts_at": "9999-12-28T00:00:00Z", "ends_at": "9999-12-31T00:00:00Z"}
        await redis.xadd(KEY, entry(rig, "year9999", **far))  # its retention overflows
        await redis.xadd(KEY, entry(rig, "corrupt", action="update", revision="2"))
        await redis.xadd(KEY, entry(rig, "tomb", revision="3"))
        await redis.xadd(KEY, entry(rig, "good"))
        consumer = intake(rig)
        await consumer.ensure_group()
        with capture_logs() as logs:
            assert await consumer.drain() == 6
        reasons = await dead_letters(redis)
        assert sorted(reasons) == ["corrupt", "huge", "superscript", "tomb", "year9999"]
        assert all(0 < len(reason) <= 300 and "9" * 50 not in reason for reason in reasons.values())
        assert (await redis.xpending(KEY, GROUP))["pending"] == 0
        assert await StayStore(rig.pool).get("good") is not None
        rejected = [e for e in logs if e["event"] == "intake.rejected"]
        assert len(rejected) == 5


async def test_a_stay_key_of_the_wrong_type_is_dead_lettered(
    redis: Redis, redis_url: str
) -> None:
    """A stay key that is not a string (WRONGTYPE) is a broken record, the entry's to carry:
    dead-lettered with a reason naming the key, and the stream moves on."""
    async with Rig(redis_url, one_lock()) as rig:
        await rig.pool.hset("codeprov:stay:B1", "not", "a string")  # type: ignore[misc]
        await redis.xadd(KEY, entry(rig, "B1"))
        await redis.xadd(KEY, entry(rig, "B2"))
        consumer = intake(rig)
        await consumer.ensure_group()
        assert await consumer.drain() == 2
        reasons = await dead_letters(redis)
        assert list(reasons) == ["B1"] and "codeprov:stay:B1" in reasons["B1"]
        assert "WRONGTYPE" in reasons["B1"]
        assert await StayStore(rig.pool).get("B2") is not None
        assert (await redis.xpending(KEY, GROUP))["pending"] == 0


async def test_redis_refusing_a_command_leaves_the_entry_pending(
    redis: Redis, redis_url: str
) -> None:
    """Redis refusing us (an ACL without the stay keys) is not the entry's fault: it is not
    dead-lettered, it stays pending, and is applied once Redis lets us in."""
    await redis.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "intake-only", "on", ">pw", "resetkeys", "~codeprov:intake*",
        "+@all")
    try:
        async with Rig(redis_url, one_lock()) as rig:
            limited = await connect(rig.settings.model_copy(
                update={"redis_url": redis_url.replace("redis://", "redis://intake-only:pw@")}))
            await redis.xadd(KEY, entry(rig, "B1"))
            consumer = Intake(limited, "c1", rig.sandbox.clock.now, claim_idle=0.0, block=0.05)
            await consumer.ensure_group()
            with pytest.raises(NoPermissionError):
                await consumer.drain()
            await limited.aclose()
            assert await redis.xlen(DEAD) == 0
            assert (await redis.xpending(KEY, GROUP))["pending"] == 1
            assert await intake(rig, claim_idle=0.0).drain() == 1  # a consumer Redis lets in
            assert await StayStore(rig.pool).get("B1") is not None
            assert (await redis.xpending(KEY, GROUP))["pending"] == 0
    finally:
        await redis.execute_command("ACL", "DELUSER", "intake-only")  # type: ignore[no-untyped-call]


async def test_a_deleted_stream_and_group_are_recreated(redis: Redis, redis_url: str) -> None:
    """After DEL of the stream (its group gone with it), a running consumer re-creates the group,
    logs `intake.group_recreated`, and applies an entry written afterwards."""
    async with Rig(redis_url, one_lock()) as rig:
        consumer = intake(rig)
        with capture_logs() as logs:
            task = asyncio.create_task(consumer.run())
            try:
                await until(lambda: redis.exists(KEY))
                await redis.delete(KEY)
                await redis.xadd(KEY, entry(rig, "after"))
                await until(lambda: StayStore(rig.pool).get("after"))
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        recreated = [e for e in logs if e["event"] == "intake.group_recreated"]
        assert recreated and recreated[0]["log_level"] == "warning"
        assert not [e for e in logs if e["event"] == "intake.crashed"]


async def worker_record(redis: Redis) -> dict[str, Any] | None:
    ids = await redis.zrange(index_key("codeprov"), 0, -1)
    raw = await redis.get(worker_key("codeprov", ids[0].decode())) if ids else None
    return json.loads(raw) if raw else None


async def test_crashed_consumer_fails_health_and_is_restarted(
    redis: Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer that crashes (the stream key is a string: WRONGTYPE) is logged `intake.crashed`,
    its worker's heartbeat names the problem and stops touching the file so health fails, and
    once the key is fixed it is restarted, the problem cleared, and new entries applied."""
    beat_file = tmp_path / "heartbeat"
    monkeypatch.setenv("CODEPROV_HEARTBEAT_FILE", str(beat_file))
    monkeypatch.setenv("CODEPROV_HEARTBEAT_INTERVAL", str(BEAT))
    async with Rig(redis_url, one_lock()) as rig:
        await redis.set(KEY, "x")
        worker = make_worker(rig.settings, poll_delay=0.01, seam_transport=rig.transport(),
                             clock=rig.sandbox.clock.now, handle_signals=False)
        with capture_logs() as logs:
            task = asyncio.create_task(worker.async_run())
            try:
                async def stale_with_problem() -> dict[str, Any] | None:
                    record = await worker_record(redis)
                    if not record or "intake" not in record["problems"]:
                        return None
                    last_beat = datetime.fromisoformat(record["last_beat"]).timestamp()
                    return record if last_beat - beat_file.stat().st_mtime > 2 * BEAT else None

                down = await until(stale_with_problem)
                last_beat = datetime.fromisoformat(down["last_beat"]).timestamp()
                # what `codeprov health` checks, at the time of the worker's last beat
                assert check(beat_file, MISSED_BEATS * BEAT, now=last_beat + BEAT) is not None
                await redis.delete(KEY)
                await redis.xadd(KEY, entry(rig, "after"))
                await until(lambda: StayStore(rig.pool).get("after"))

                async def healthy() -> bool:
                    record = await worker_record(redis)
                    return bool(record and not record["problems"])

                await until(healthy)
                assert check(beat_file, MISSED_BEATS * BEAT) is None
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await worker.close()
        crashed = [e for e in logs if e["event"] == "intake.crashed"]
        assert crashed and crashed[0]["log_level"] == "error"
        assert "WRONGTYPE" in crashed[0]["error"] and crashed[0]["exc_info"]


async def test_trim_keeps_the_oldest_pending_entry(redis: Redis, redis_url: str) -> None:
    """With 250 acknowledged entries between two pending ones, trimming keeps the older pending
    entry, so another consumer can still claim and apply it."""
    async with Rig(redis_url, one_lock()) as rig:
        consumer = intake(rig)
        await consumer.ensure_group()
        oldest = await redis.xadd(KEY, entry(rig, "oldest"))
        await redis.xreadgroup(GROUP, "died", {KEY: ">"}, count=1)  # read, never acknowledged
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(250):
                pipe.xadd(KEY, entry(rig, f"B{i:03}"))
            await pipe.execute()
        assert await consumer.drain() == 250
        await redis.xadd(KEY, entry(rig, "newest"))
        await redis.xreadgroup(GROUP, "slow", {KEY: ">"}, count=1)  # pending too
        await consumer.trim()
        assert await redis.xrange(KEY, oldest, oldest)
        assert await intake(rig, "survivor", claim_idle=0.0).drain() == 2
        assert await StayStore(rig.pool).get("oldest") is not None


async def test_trim_keeps_what_another_group_has_not_read(redis: Redis, redis_url: str) -> None:
    """Trimming takes the lowest floor over all consumer groups: 250 entries our group
    acknowledged stay while a second group has not read them, and go once it has."""
    async with Rig(redis_url, one_lock()) as rig:
        consumer = intake(rig)
        await consumer.ensure_group()
        await redis.xgroup_create(KEY, "audit", id="0")
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(250):
                pipe.xadd(KEY, entry(rig, f"B{i:03}"))
            await pipe.execute()
        assert await consumer.drain() == 250
        assert await redis.xlen(KEY) == 250
        read = await redis.xreadgroup("audit", "a1", {KEY: ">"}, count=250)
        await redis.xack(KEY, "audit", *(entry_id for entry_id, _ in read[0][1]))
        await consumer.trim()
        assert await redis.xlen(KEY) < 250  # XTRIM ~ drops whole nodes (100 entries each)


async def test_an_entry_deleted_while_pending_does_not_stop_trimming(
    redis: Redis, redis_url: str
) -> None:
    """An entry deleted (XDEL) while pending leaves the pending list once claimed, so the
    acknowledged entries behind it are trimmed again."""
    async with Rig(redis_url, one_lock()) as rig:
        consumer = intake(rig, claim_idle=0.0)
        await consumer.ensure_group()
        lost = await redis.xadd(KEY, entry(rig, "lost"))
        await redis.xreadgroup(GROUP, "died", {KEY: ">"}, count=1)
        await redis.xdel(KEY, lost)
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(250):
                pipe.xadd(KEY, entry(rig, f"B{i:03}"))
            await pipe.execute()
        await consumer.drain()
        assert (await redis.xpending(KEY, GROUP))["pending"] == 0
        assert await redis.xlen(KEY) < 250  # XTRIM ~ drops whole nodes (100 entries each)


async def test_trim_of_a_deleted_stream_is_quiet(redis: Redis, redis_url: str) -> None:
    """Trimming a stream that was deleted meanwhile does nothing and raises nothing."""
    async with Rig(redis_url, one_lock()) as rig:
        consumer = intake(rig)
        await consumer.ensure_group()
        await redis.delete(KEY)
        await consumer.trim()
        assert not await redis.exists(KEY)
