"""The GCRA limiter's arithmetic: exact on an injected clock, bounded on Redis server time.

With `Limiter(..., now_ms=clock)` the Lua script takes the time as its last ARGV instead of
reading Redis TIME, so the first group of tests can check the arithmetic to the millisecond.
The second group runs on Redis's own clock and checks bounds that hold whatever the timing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import pytest
from redis.asyncio import Redis

from worker.errors import RateLimitWait
from worker.limiter import RESERVE_SLACK_MS, Budgets, Limiter, Operation, Rate

pytestmark = pytest.mark.anyio

WORKSPACE = "codeprov:rl:workspace"
MINUTE = 60_000


@dataclass
class FakeClock:
    """Milliseconds that move only when a test says so."""

    ms: int = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


def limiter(redis: Redis, workspace: Rate, creates: Rate | None = None,
            clock: FakeClock | None = None) -> Limiter:
    budgets = Budgets(workspace, {Operation.CREATE: creates} if creates else {})
    return Limiter(redis, budgets, max_sleep=5.0, now_ms=clock)


async def grant_times(lim: Limiter, clock: FakeClock, n: int) -> list[int]:
    """Ask like a patient client: when refused, wait exactly as told; the times of n grants."""
    start, times = clock.ms, list[int]()
    while len(times) < n:
        wait_ms = round(await lim.try_acquire(Operation.READ) * 1000)
        if wait_ms == 0:
            times.append(clock.ms - start)
        else:
            clock.advance(wait_ms)
    return times


def most_in_any_second(times: list[int]) -> int:
    """The most grants in any window (t - 1000 ms, t], as the sandbox counts arrivals."""
    return max(sum(1 for u in times if t - 1000 < u <= t) for t in times)


# --- Exact, on an injected clock -----------------------------------------------------------


async def test_sustained_rate_is_exact_over_many_requests(redis: Redis) -> None:
    """At 10/s with burst 1, grant k comes exactly k x 100 ms after the first, for 500 grants."""
    clock = FakeClock()
    times = await grant_times(limiter(redis, Rate(10), clock=clock), clock, 500)
    assert times == [100 * k for k in range(500)]


async def test_a_request_one_millisecond_early_is_refused(redis: Redis) -> None:
    """The wait returned is exact: 1 ms before it the answer is still 'wait 1 ms'."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10), clock=clock)
    assert await lim.try_acquire(Operation.READ) == 0
    clock.advance(99)
    assert await lim.try_acquire(Operation.READ) == pytest.approx(0.001)
    clock.advance(1)
    assert await lim.try_acquire(Operation.READ) == 0


async def test_burst_then_one_per_interval(redis: Redis) -> None:
    """Burst 5 at 10/s: five grants at once, then one every 100 ms."""
    clock = FakeClock()
    times = await grant_times(limiter(redis, Rate(10, burst=5), clock=clock), clock, 8)
    assert times == [0, 0, 0, 0, 0, 100, 200, 300]


async def test_idle_time_banks_no_more_than_the_burst(redis: Redis) -> None:
    """After a minute idle, burst 5 still allows only five back-to-back requests."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10, burst=5), clock=clock)
    await grant_times(lim, clock, 5)
    clock.advance(MINUTE)
    waits = [await lim.try_acquire(Operation.READ) for _ in range(6)]
    assert waits == [0, 0, 0, 0, 0, pytest.approx(0.1)]


@pytest.mark.parametrize("per_second", [3, 7, 9, 10, 12, 30, 45])
async def test_never_more_than_the_budget_in_any_second(redis: Redis, per_second: int) -> None:
    """With burst 1, no 1-second window ever holds more than the budget, whatever the rate.

    Intervals are whole milliseconds, so a budget that does not divide 1000 gets a little less.
    """
    clock = FakeClock()
    lim = limiter(redis, Rate(per_second), clock=clock)
    times = await grant_times(lim, clock, per_second * 5)
    assert per_second - 1 <= most_in_any_second(times) <= per_second


async def test_all_buckets_or_none(redis: Redis) -> None:
    """A create refused by its device's bucket spends nothing from the workspace's."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10), creates=Rate(1, 60.0), clock=clock)
    assert await lim.try_acquire(Operation.CREATE, "lock-1") == 0
    clock.advance(100)
    assert await lim.try_acquire(Operation.CREATE, "lock-1") == pytest.approx(59.9)
    assert await lim.try_acquire(Operation.READ) == 0  # the workspace token is still there
    clock.advance(100)
    assert await lim.try_acquire(Operation.CREATE, "lock-2") == 0


async def test_wait_is_the_longest_of_the_buckets(redis: Redis) -> None:
    """Refused by two buckets, the answer is the later of their two times."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10), creates=Rate(1, 60.0), clock=clock)
    await lim.try_acquire(Operation.CREATE, "lock-1")
    clock.advance(50)
    assert await lim.try_acquire(Operation.CREATE, "lock-1") == pytest.approx(59.95)
    assert await lim.try_acquire(Operation.CREATE, "lock-2") == pytest.approx(0.05)


async def test_penalty_blocks_every_bucket_and_spends_nothing(redis: Redis) -> None:
    """During a penalty every request waits for it, and no token is taken meanwhile."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10), creates=Rate(1, 60.0), clock=clock)
    await lim.penalize(None, 30.0)
    assert 29 < await lim.try_acquire(Operation.CREATE, "lock-1") <= 30
    assert not await redis.exists(WORKSPACE, "codeprov:rl:device:create:lock-1")


async def test_after_a_penalty_the_budget_resumes_without_a_burst(redis: Redis) -> None:
    """When a penalty ends, waiting workers are let through one interval apart, not at once."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10), clock=clock)
    await grant_times(lim, clock, 3)
    await lim.penalize(None, 30.0)
    clock.advance(30_000)
    await redis.delete(lim.penalty_key(None))  # its PX runs on Redis's own clock
    waits = [await lim.try_acquire(Operation.READ) for _ in range(3)]
    assert waits == [0, pytest.approx(0.1), pytest.approx(0.1)]


async def test_waiters_on_one_lock_get_their_own_slots_in_turn(redis: Redis) -> None:
    """Five stays reserving at once on a lock that takes a create a minute get five slots one
    interval (plus the slack for late jobs) apart, and a sixth after them: no two share one."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10), creates=Rate(1, 60.0), clock=clock)
    slot = MINUTE + RESERVE_SLACK_MS
    waits = [round(await lim.reserve(Operation.CREATE, "lock-1") * 1000) for _ in range(5)]
    assert waits == [0, slot, 2 * slot, 3 * slot, 4 * slot]
    clock.advance(slot)  # time passes: the next free slot is still after the fifth
    assert round(await lim.reserve(Operation.CREATE, "lock-1") * 1000) == 4 * slot
    assert await lim.reserve(Operation.CREATE, "lock-2") == 0  # other locks are not held up


async def test_no_turn_is_handed_out_beyond_the_horizon(redis: Redis) -> None:
    """With a 2.5-minute horizon on a create a minute, three turns are handed out (0, 1, 2
    minutes away); the fourth caller is told to come back once its turn would be inside the
    horizon (within one interval of jitter) and spends nothing; an unbounded caller still gets
    the fourth turn."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10), creates=Rate(1, 60.0), clock=clock)
    slot = MINUTE + RESERVE_SLACK_MS
    horizon = 150.0
    waits = [round(await lim.reserve(Operation.CREATE, "lock-1", within=horizon) * 1000)
             for _ in range(3)]
    assert waits == [0, slot, 2 * slot]
    with pytest.raises(RateLimitWait) as later:
        await lim.reserve(Operation.CREATE, "lock-1", within=horizon)
    assert 3 * slot / 1000 - horizon <= later.value.retry_after <= 4 * slot / 1000 - horizon
    assert round(await lim.reserve(Operation.CREATE, "lock-1") * 1000) == 3 * slot


async def test_a_reserved_create_spends_only_the_workspace_token(redis: Redis) -> None:
    """At its slot the create takes the workspace's token and not the device's again, and a
    plain create meanwhile waits for the slots already given out."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10), creates=Rate(1, 60.0), clock=clock)
    assert await lim.reserve(Operation.CREATE, "lock-1") == 0
    assert await lim.try_acquire(Operation.CREATE, "lock-1", reserved=True) == 0
    clock.advance(100)
    waited = await lim.try_acquire(Operation.CREATE, "lock-1")
    assert waited == pytest.approx((MINUTE + RESERVE_SLACK_MS - 100) / 1000)
    assert await lim.try_acquire(Operation.READ) == 0  # the refused create took nothing


async def test_a_penalty_reserves_nothing_and_holds_reserved_slots(redis: Redis) -> None:
    """Under Seam's 429 on a lock, reserving raises the penalty's wait without spending a slot,
    and a create at its reserved slot still waits the penalty out."""
    clock = FakeClock()
    lim = limiter(redis, Rate(10), creates=Rate(1, 60.0), clock=clock)
    assert await lim.reserve(Operation.CREATE, "lock-1") == 0
    await lim.penalize("lock-1", 30.0)
    with pytest.raises(RateLimitWait) as refused:
        await lim.reserve(Operation.CREATE, "lock-1")
    assert 29 < refused.value.retry_after <= 30
    assert 29 < await lim.try_acquire(Operation.CREATE, "lock-1", reserved=True) <= 30
    await redis.delete(lim.penalty_key("lock-1"))
    waited = await lim.reserve(Operation.CREATE, "lock-1")
    assert waited == pytest.approx((MINUTE + RESERVE_SLACK_MS) / 1000)  # only one slot was taken


# --- Bounded, on Redis server time ---------------------------------------------------------


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_each_grant_moves_the_theoretical_arrival_time_one_interval(redis: Redis) -> None:
    """With burst 4 of 1/min, four grants push the TAT exactly four minutes ahead."""
    before = await redis_ms(redis)
    lim = limiter(redis, Rate(1, 60.0, burst=4))
    assert [await lim.try_acquire(Operation.READ) for _ in range(4)] == [0, 0, 0, 0]
    after = await redis_ms(redis)
    tat = int(await redis.get(WORKSPACE))
    assert before + 4 * MINUTE <= tat <= after + 4 * MINUTE
    wait = await lim.try_acquire(Operation.READ)
    asked_by = await redis_ms(redis)
    assert (tat - 3 * MINUTE - asked_by) / 1000 <= wait <= (tat - 3 * MINUTE - after) / 1000


async def test_concurrent_workers_never_overspend_a_bucket(redis_url: str, redis: Redis) -> None:
    """100 creates at once from 5 connections: exactly the device's burst of 3 pass, and the
    workspace is charged for those 3 only."""
    clients = [Redis.from_url(redis_url) for _ in range(5)]
    granted: list[float] = []
    try:
        lims = [limiter(c, Rate(1, 60.0, burst=1000), creates=Rate(1, 60.0, burst=3))
                for c in clients]
        before = await redis_ms(redis)

        async def create(lim: Limiter) -> None:
            if await lim.try_acquire(Operation.CREATE, "lock-1") == 0:
                granted.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(create, lims[i % 5])
        after = await redis_ms(redis)
    finally:
        for c in clients:
            await c.aclose()
    assert len(granted) == 3
    tat = int(await redis.get(WORKSPACE))
    assert before + 3 * MINUTE <= tat <= after + 3 * MINUTE


async def test_shared_rate_holds_across_clients_on_real_time(redis_url: str, redis: Redis) -> None:
    """Twenty sleeping workers on four connections, for 0.6 s at 50/s: never more grants than
    the elapsed Redis time allows, and not many fewer."""
    clients = [Redis.from_url(redis_url) for _ in range(4)]
    grants = 0
    try:
        lims = [limiter(c, Rate(50)) for c in clients]
        start = await redis_ms(redis)
        deadline = time.monotonic() + 0.6

        async def work(lim: Limiter) -> None:
            nonlocal grants
            while time.monotonic() < deadline:
                await lim.acquire(Operation.READ)
                grants += 1

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(work, lims[i % 4])
        end = await redis_ms(redis)
    finally:
        for c in clients:
            await c.aclose()
    allowed = (end - start) // 20 + 1
    assert 0.7 * allowed <= grants <= allowed


async def test_a_shorter_penalty_does_not_cut_a_longer_one(redis: Redis) -> None:
    """A 1 s penalty set during a 30 s one leaves the 30 s one in force."""
    lim = limiter(redis, Rate(1000))
    await lim.penalize(None, 30.0)
    await lim.penalize(None, 1.0)
    assert await lim.try_acquire(Operation.READ) > 29


async def test_workspace_penalty_holds_device_writes_too(redis: Redis) -> None:
    """A workspace-wide pause also stops writes, which spend the workspace budget as well."""
    lim = limiter(redis, Rate(1000), creates=Rate(600, 60.0))
    await lim.penalize(None, 5.0)
    assert 4 < await lim.try_acquire(Operation.CREATE, "lock-1") <= 5


def test_interval_never_lets_more_than_the_budget_into_its_period() -> None:
    """For every whole budget of 1-2000 per second or per minute, count intervals fill the
    period: the limiter never rounds its way above the budget."""
    for per in (1.0, 60.0):
        for count in range(1, 2001):
            assert count * Rate(count, per).interval_ms >= per * 1000, (count, per)
