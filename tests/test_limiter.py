"""The shared GCRA limiter, in a real Redis, as several processes would use it."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from worker.errors import RateLimitWait
from worker.limiter import Budgets, Limiter, Operation, Rate

pytestmark = pytest.mark.anyio


def limiter(
    redis: Redis,
    per_second: float = 10,
    burst: int = 1,
    max_sleep: float = 0.0,
    creates_per_minute: float = 10,
) -> Limiter:
    budgets = Budgets(
        Rate(per_second, 1.0, burst), {Operation.CREATE: Rate(creates_per_minute, 60.0)}
    )
    return Limiter(redis, budgets, max_sleep=max_sleep)


async def test_burst_then_wait(redis: Redis) -> None:
    """With burst B, B requests pass at once and the next must wait about one interval."""
    lim = limiter(redis, per_second=10, burst=3)
    waits = [await lim.try_acquire(Operation.READ) for _ in range(4)]
    assert waits[:3] == [0, 0, 0]
    assert 0.05 < waits[3] <= 0.1


async def test_two_limiters_share_one_budget(redis: Redis) -> None:
    """Two limiter instances (two workers) draw from the same bucket."""
    a, b = limiter(redis, burst=2), limiter(redis, burst=2)
    assert await a.try_acquire(Operation.READ) == 0
    assert await b.try_acquire(Operation.READ) == 0
    assert await a.try_acquire(Operation.READ) > 0
    assert await b.try_acquire(Operation.READ) > 0


async def test_denied_request_spends_nothing(redis: Redis) -> None:
    """A refused request leaves every bucket as it was."""
    lim = limiter(redis, per_second=1, burst=10, creates_per_minute=1)  # TATs live for seconds
    assert await lim.try_acquire(Operation.CREATE, "lock-1") == 0
    assert await lim.try_acquire(Operation.CREATE, "lock-1") > 50  # device budget: 1/min
    tat_before = await redis.get("codeprov:rl:workspace")
    await lim.try_acquire(Operation.CREATE, "lock-1")
    assert await redis.get("codeprov:rl:workspace") == tat_before


async def test_device_budgets_are_per_device(redis: Redis) -> None:
    """One device's create budget does not hold back another device."""
    lim = limiter(redis, per_second=1000, burst=10, creates_per_minute=1)
    assert await lim.try_acquire(Operation.CREATE, "lock-1") == 0
    assert await lim.try_acquire(Operation.CREATE, "lock-2") == 0


async def test_reads_skip_device_budget(redis: Redis) -> None:
    """Reads only spend the workspace budget."""
    lim = limiter(redis, per_second=1000, burst=10, creates_per_minute=1)
    await lim.try_acquire(Operation.CREATE, "lock-1")
    assert await lim.try_acquire(Operation.READ, "lock-1") == 0


async def test_penalty_pauses_every_worker(redis: Redis) -> None:
    """After a 429, every limiter sharing the Redis waits out the penalty."""
    a, b = limiter(redis, per_second=1000), limiter(redis, per_second=1000)
    await a.penalize(None, 5.0)
    assert 4.0 < await b.try_acquire(Operation.READ) <= 5.0


async def test_device_penalty_leaves_other_devices(redis: Redis) -> None:
    """A device's penalty does not pause writes to other devices."""
    lim = limiter(redis, per_second=1000, burst=10)
    await lim.penalize("lock-1", 5.0)
    assert await lim.try_acquire(Operation.CREATE, "lock-1") > 4
    assert await lim.try_acquire(Operation.CREATE, "lock-2") == 0


async def test_long_wait_raises_instead_of_sleeping(redis: Redis) -> None:
    """A wait longer than max_sleep raises RateLimitWait so the job can reschedule."""
    lim = limiter(redis, per_second=1000, max_sleep=1.0)
    await lim.penalize(None, 30.0)
    with pytest.raises(RateLimitWait) as info:
        await lim.acquire(Operation.READ)
    assert info.value.retry_after > 29


async def test_short_wait_sleeps_then_passes(redis: Redis) -> None:
    """A wait within max_sleep is slept through with the injected sleep."""
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await redis.delete("codeprov:rl:penalty:workspace")

    lim = Limiter(redis, Budgets(Rate(1000), {}), max_sleep=2.0, sleep=fake_sleep)
    await lim.penalize(None, 1.0)
    await lim.acquire(Operation.READ)
    assert len(slept) == 1 and 0.9 < slept[0] < 1.1
