"""Seam's Retry-After: seconds or an HTTP-date, clamped; a shared pause never shortened."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from redis.asyncio import Redis

from worker.errors import SeamRateLimited
from worker.limiter import Budgets, Limiter, Rate
from worker.seam import SeamClient
from worker.seam_answers import RETRY_AFTER_MAX

pytestmark = pytest.mark.anyio


def answering_429(**headers: str) -> httpx.MockTransport:
    body = {"error": {"type": "too_many_requests", "message": "slow down"}, "ok": False}
    return httpx.MockTransport(lambda request: httpx.Response(429, json=body, headers=headers))


async def retry_after_of(redis: Redis, **headers: str) -> tuple[float | None, int]:
    """What the client read from a 429 with these headers, and the workspace pause it set (ms)."""
    limiter = Limiter(redis, Budgets(Rate(1000, 1, 100), {}))
    client = SeamClient("http://seam", "seam_test_key", limiter=limiter,
                        transport=answering_429(**headers))
    try:
        with pytest.raises(SeamRateLimited) as caught:
            await client.get_access_code("ac-1")
    finally:
        await client.aclose()
    return caught.value.retry_after, await redis.pttl(limiter.penalty_key(None))


async def test_seconds_are_read(redis: Redis) -> None:
    """`Retry-After: 7` pauses the workspace for 7 s."""
    retry_after, pause_ms = await retry_after_of(redis, **{"retry-after": "7"})
    assert retry_after == 7.0
    assert 6000 < pause_ms <= 7000


async def test_an_http_date_is_read_against_the_answers_date(redis: Redis) -> None:
    """An HTTP-date 40 s after the answer's Date header means 40 s, whatever our clock says."""
    answered = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)  # far from now: only the headers count
    headers = {"retry-after": format_datetime(answered + timedelta(seconds=40), usegmt=True),
               "date": format_datetime(answered, usegmt=True)}
    retry_after, pause_ms = await retry_after_of(redis, **headers)
    assert retry_after == 40.0
    assert 39000 < pause_ms <= 40000


async def test_an_endless_pause_is_clamped(redis: Redis) -> None:
    """`inf` or a huge number pause for RETRY_AFTER_MAX, and raise nothing else."""
    for value in ("inf", "1e308"):
        retry_after, pause_ms = await retry_after_of(redis, **{"retry-after": value})
        assert retry_after == RETRY_AFTER_MAX
        assert RETRY_AFTER_MAX * 1000 - 1000 < pause_ms <= RETRY_AFTER_MAX * 1000
        await redis.flushdb()


async def test_an_unreadable_value_falls_back_to_our_backoff(redis: Redis) -> None:
    """`nan` or garbage is no Retry-After: our own short jittered backoff pauses instead."""
    for value in ("nan", "soon", "Mon, 99 Foo 2020"):
        retry_after, pause_ms = await retry_after_of(redis, **{"retry-after": value})
        assert retry_after is None
        assert 0 < pause_ms <= 1000
        await redis.flushdb()


async def test_a_shorter_pause_never_replaces_a_longer_one(redis: Redis) -> None:
    """Two 429s answered at once: the workspace waits out the longer pause."""
    limiter = Limiter(redis, Budgets(Rate(1000, 1, 100), {}))
    await asyncio.gather(limiter.penalize(None, 30.0), limiter.penalize(None, 1.0))
    assert await redis.pttl(limiter.penalty_key(None)) > 29000
