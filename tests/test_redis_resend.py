"""redis-py resends a script whose answer timed out, though its first run may have committed:
a step must take that as its own write, not as a lost race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from jobs.payload import Stay
from jobs.pipeline import _BEGIN
from jobs.state import StayState, StayStore

pytestmark = pytest.mark.anyio
TIMEOUT = 0.3  # the client's read timeout; Redis is made to answer later than that


@pytest.fixture
async def impatient(redis: Redis, redis_url: str) -> AsyncIterator[Redis]:
    """A client that gives up on an answer after TIMEOUT and resends the command."""
    client = Redis.from_url(redis_url, socket_timeout=TIMEOUT, retry_on_timeout=True,
                            retry=Retry(NoBackoff(), 10))
    await client.ping()  # connected before Redis is blocked: a connect is not retried
    try:
        yield client
    finally:
        await client.aclose()


async def late_answers(redis: Redis) -> asyncio.Task[object]:
    """Block Redis for 2 TIMEOUTs from now: what is sent meanwhile is answered late."""
    sleep = redis.execute_command("DEBUG", "SLEEP", 2 * TIMEOUT)  # type: ignore[no-untyped-call]
    blocker = asyncio.create_task(sleep)
    await asyncio.sleep(0.05)  # DEBUG SLEEP has started
    return blocker


async def test_a_commit_resent_after_a_timeout_is_ours(redis: Redis, impatient: Redis) -> None:
    """The first run committed, the resend finds the new seq: commit still answers True."""
    now = datetime.now(UTC)
    state = StayState(stay=Stay(booking_id="B1", device_id="lock-1"), enqueued_at=now,
                      updated_at=now)
    assert await StayStore(redis).create(state)
    state.seq = 1
    store = StayStore(impatient)
    assert not await store.commit(state, expected_seq=7)  # the script is loaded: EVALSHA
    blocker = await late_answers(redis)
    committed = await store.commit(state, expected_seq=0)
    await blocker
    stored = await StayStore(redis).get("B1")
    assert stored is not None and stored.seq == 1
    assert committed is True


async def test_a_step_lock_taken_by_a_resent_begin_is_its_own(
    redis: Redis, impatient: Redis
) -> None:
    """The step's start script resent after its first run took the lock: the lock is its own."""
    now = datetime.now(UTC)
    state = StayState(stay=Stay(booking_id="B1", device_id="lock-1"), enqueued_at=now,
                      updated_at=now)
    assert await StayStore(redis).create(state)
    keys = ["codeprov:stay:B1", "codeprov:lock:B1", "codeprov:latency", "codeprov:down",
            "codeprov:events:flowing", "codeprov:signal:B1"]
    begin = impatient.register_script(_BEGIN)
    assert (await begin(keys=["none", *keys[1:]], args=[0, "job-1", 30_000]))[0] == 0  # loaded
    blocker = await late_answers(redis)
    begun = await begin(keys=keys, args=[0, "job-1", 30_000])
    await blocker
    assert begun[0] == 3  # _LOCKED, not _BUSY
