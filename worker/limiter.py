"""One rate limiter for every worker process: GCRA in Redis, one Lua script, server time.

Each request asks for one token from every bucket that applies to it (the workspace's, and for
writes the device's create/update/delete bucket) in ONE script call, so the check and the spend
are atomic across processes. A 429 from Seam sets a shared penalty key: every worker then waits
out Retry-After (or a jittered backoff) for that scope, instead of each finding out on its own.

Short waits are slept inside the job; longer ones raise RateLimitWait so the job reschedules
itself and frees its worker slot.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
from redis.asyncio import Redis

from worker.errors import RateLimitWait

# KEYS: bucket keys, then penalty keys. ARGV: bucket count, per bucket (interval_ms,
# tolerance_ms), ahead_ms (-1: take a token now or none; else reserve the earliest free slot if
# it is at most ahead_ms away), then optionally now_ms (tests); else Redis server time, one clock
# for all. Returns {status, wait_ms}: {1, wait} granted, every bucket spent (the slot `wait` ms
# from now is this caller's, and only its); {0, wait} refused by a bucket, nothing spent;
# {-1, ttl} refused by a penalty (a 429's pause), nothing spent.
# KEYS: the penalty key. ARGV: the pause in ms. Sets the key for that long unless it already
# lasts longer. Returns 1 if set, 0 if the existing pause was kept.
_PENALIZE = """
if redis.call('PTTL', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
"""
MAX_PENALTY = 3600.0  # seconds: no pause lasts longer, whatever asked for it

_GCRA = """
local nb = tonumber(ARGV[1])
local ahead = tonumber(ARGV[2 * nb + 2])
local now = tonumber(ARGV[2 * nb + 3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local wait = 0
for i = nb + 1, #KEYS do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl > wait then wait = ttl end
end
if wait > 0 then return {-1, wait} end
local tats = {}
for i = 1, nb do
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local over = tat - now - tonumber(ARGV[2 * i + 1])
  if over > wait then wait = over end
end
if wait > 0 and (ahead < 0 or wait > ahead) then return {0, wait} end
for i = 1, nb do
  local tat = math.max(tats[i], now + wait) + tonumber(ARGV[2 * i])
  redis.call('SET', KEYS[i], tat, 'PX', math.max(1, tat - now))
end
return {1, wait}
"""


# A reserved slot is used when its job comes back from the queue, a few ms to a few hundred late;
# this much more between slots (at most 2 % of the interval) keeps a late one from crowding the
# next into Seam's window.
RESERVE_SLACK_MS = 100
GRANTED, REFUSED, PAUSED = 1, 0, -1  # the script's status


class Operation(enum.Enum):
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class Rate:
    """`count` requests per `per` seconds, `burst` of them back to back."""

    count: float
    per: float = 1.0
    burst: int = 1
    slack_ms: int = 0  # added to every interval

    @property
    def interval_ms(self) -> int:
        # Rounded up: 3/s must be 334 ms apart, or a fourth request fits into one second.
        return max(1, math.ceil(self.per / self.count * 1000)) + self.slack_ms

    @property
    def tolerance_ms(self) -> int:
        return self.interval_ms * (self.burst - 1)


@dataclass(frozen=True)
class Budgets:
    workspace: Rate
    device: dict[Operation, Rate]


Sleep = Callable[[float], Awaitable[None]]


class Limiter:
    def __init__(
        self,
        redis: Redis,
        budgets: Budgets,
        *,
        prefix: str = "codeprov",
        max_sleep: float = 2.0,
        sleep: Sleep = anyio.sleep,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self._now_ms = now_ms
        self._redis = redis
        self._budgets = budgets
        self._prefix = prefix
        self._max_sleep = max_sleep
        self._sleep = sleep
        self._script = redis.register_script(_GCRA)

    async def try_acquire(
        self, operation: Operation, device_id: str | None = None, *, reserved: bool = False
    ) -> float:
        """Spend one token from every bucket that applies; 0.0, or seconds to wait first.

        `reserved`: the device's token was reserved earlier (`reserve`); take the workspace's only.
        """
        buckets = [(f"{self._prefix}:rl:workspace", self._budgets.workspace)]
        penalties = [self.penalty_key(None)]
        rate = self._budgets.device.get(operation)
        if rate is not None and device_id is not None:
            penalties.append(self.penalty_key(device_id))  # a reserved slot still waits out a 429
            if not reserved:
                buckets.append((self._device_key(operation, device_id), rate))
        status, wait = await self._gcra(buckets, penalties)
        return 0.0 if status == GRANTED else wait

    async def reserve(
        self, operation: Operation, device_id: str, *, within: float = math.inf
    ) -> float:
        """Spend the device's next free token for `operation`; seconds until it may be used.

        Waiters on one lock get its slots in turn, each its own, instead of all coming back at
        the same instant to race for one token. The caller then sends at its slot with
        `acquire(..., reserved=True)`; a slot not used is lost, never given to another. Nothing
        is reserved (RateLimitWait: try again then) under a penalty (Seam's 429), or when the
        next free slot is more than `within` seconds away: the queue of turns stays short, and a
        later, more urgent caller (with a longer `within`) does not wait behind all of it.
        """
        rate = self._budgets.device.get(operation)
        if rate is None:
            return 0.0
        slack = min(RESERVE_SLACK_MS, rate.interval_ms // 50)
        slotted = Rate(rate.count, rate.per, rate.burst, slack_ms=slack)
        status, wait = await self._gcra(
            [(self._device_key(operation, device_id), slotted)],
            [self.penalty_key(None), self.penalty_key(device_id)],
            ahead=within,
        )
        if status == GRANTED:
            return wait
        if status == REFUSED:  # beyond the horizon: back when its slot would be inside it
            wait = wait - within + random.uniform(0, slotted.interval_ms / 1000)
        raise RateLimitWait(_scope(operation, device_id), wait)

    async def _gcra(
        self,
        buckets: Sequence[tuple[str, Rate]],
        penalties: Sequence[str],
        *,
        ahead: float | None = None,
    ) -> tuple[int, float]:
        """Run the script: (status, seconds); see _GCRA. LocalLimiter overrides this.

        `ahead`: None takes a token now or none; seconds reserve a slot at most that far away.
        """
        args: list[int] = [len(buckets)]
        for _, r in buckets:
            args += [r.interval_ms, r.tolerance_ms]
        args.append(-1 if ahead is None else int(min(ahead, 10**12 / 1000) * 1000))
        if self._now_ms is not None:
            args.append(self._now_ms())
        keys = [k for k, _ in buckets] + list(penalties)
        status, wait_ms = await self._script(keys=keys, args=args)
        return int(status), int(wait_ms) / 1000

    def _device_key(self, operation: Operation, device_id: str) -> str:
        return f"{self._prefix}:rl:device:{operation.value}:{device_id}"

    async def acquire(
        self, operation: Operation, device_id: str | None = None, *, reserved: bool = False
    ) -> None:
        """Wait for a token; RateLimitWait once the wait would pass max_sleep in all."""
        waited = 0.0
        while True:
            wait = await self.try_acquire(operation, device_id, reserved=reserved)
            if wait <= 0:
                return
            if waited + wait > self._max_sleep:
                # Tokens go to whichever waiter asks first, not in turn: without a cap an unlucky
                # job can lose the race for half a minute while holding its worker slot. Deferred,
                # it gives the slot back and re-enters the queue in due order.
                raise RateLimitWait(_scope(operation, device_id), wait)
            # A little jitter so sleepers on one bucket do not wake in lockstep.
            pause = wait + random.uniform(0, 0.01)
            await self._sleep(pause)
            waited += pause

    async def penalize(self, device_id: str | None, seconds: float) -> None:
        """Pause every worker for this scope (the workspace when device_id is None)."""
        ms = max(1, int(min(seconds, MAX_PENALTY) * 1000))
        # Keep the longer of an existing and a new penalty, in one step: two workers' 429s
        # answered at once must not let the shorter pause replace the longer.
        await self._redis.register_script(_PENALIZE)(keys=[self.penalty_key(device_id)], args=[ms])

    def penalty_key(self, device_id: str | None) -> str:
        scope = f"device:{device_id}" if device_id else "workspace"
        return f"{self._prefix}:rl:penalty:{scope}"


def _scope(operation: Operation, device_id: str | None) -> str:
    return f"{operation.value} on {device_id}" if device_id else "workspace"


def backoff(
    attempt: int, *, base: float, cap: float, factor: float = 2.0, jitter: float = 0.2
) -> float:
    """Exponential backoff with proportional jitter: base * factor^attempt, capped."""
    delay = min(cap, base * (factor ** max(0, attempt)))
    return delay * (1 - jitter * random.random())
