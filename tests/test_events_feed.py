"""worker/events_feed.py: one worker at a time polls the sandbox's /events/list from a stored
`since`, hands every event to Events.take, and survives Seam's and its own failures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.events import Events, read_counts
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Latency, Scenario
from seam_sandbox.scenario import Outage
from worker.events_feed import EventsFeed, lease_key, since_key, start_feed
from worker.queue import job_id
from worker.seam import SeamClient
from worker.wiring import shared_limiter

pytestmark = pytest.mark.anyio

SLOW_LOCK = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.2))])
LIST = "/events/list"


@asynccontextmanager
async def feeds(
    rig: Rig, count: int = 1, transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
    **options: Any,
) -> AsyncIterator[list[EventsFeed]]:
    """`count` feeds, as `count` workers would have them, on the rig's Redis and sandbox."""
    async with AsyncExitStack() as stack:
        made = []
        for n in range(count):
            seam = SeamClient(rig.settings.seam_endpoint, rig.sandbox.api_key,
                              limiter=shared_limiter(rig.pool, rig.settings),
                              transport=(transport or rig.transport)())
            stack.push_async_callback(seam.aclose)
            events = Events(rig.pool, "codeprov", rig.settings.queue_name)
            made.append(EventsFeed(rig.pool, seam, events, f"worker-{n}", rig.sandbox.clock.now,
                                   interval=0.02, request_timeout=0.2, restart_base=0.01,
                                   **options))
        yield made


def list_calls(rig: Rig, status: str | None = None) -> int:
    answers: dict[str, int] = rig.sandbox.stats()["requests"].get(LIST, {})
    return sum(n for s, n in answers.items() if status is None or s == status)


class WithJunk(httpx.AsyncBaseTransport):
    """Seam answering /events/list with two items that are not events among the real ones."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = await self.inner.handle_async_request(request)
        if request.url.path != LIST:
            return answer
        body = json.loads(await answer.aread())
        body["events"] = ["junk", {"event_type": "access_code.created"}, *body["events"]]
        return httpx.Response(answer.status_code, json=body)


class NewestFirst(httpx.AsyncBaseTransport):
    """A Seam that lists /events/list newest first (its order is undocumented), paged the same."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != LIST:
            return await self.inner.handle_async_request(request)
        asked = json.loads(request.content)
        limit, offset = asked.pop("limit", 500), asked.pop("unstable_offset", 0)
        whole = httpx.Request("POST", request.url, headers=request.headers,
                              json={**asked, "limit": 100_000})
        answer = await self.inner.handle_async_request(whole)
        body = json.loads(await answer.aread())
        ordered = sorted(body["events"], key=lambda e: e["occurred_at"], reverse=True)
        body["events"] = ordered[offset:offset + limit]
        return httpx.Response(answer.status_code, json=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def backlog(rig: Rig) -> set[str]:
    """Seven stays' codes made and waiting: the sandbox's events about them, by id."""
    for n in range(7):
        await rig.enqueue(rig.stay(f"B{n}", device=n % 3, days_ahead=10))

    async def all_waiting() -> bool:
        return all([(await rig.state(f"B{n}")).state is Phase.WAITING for n in range(7)])

    await rig.run_until(all_waiting)
    ids = {str(e["event_id"]) for e in rig.sandbox.events()}
    assert len(ids) >= 7
    return ids


async def recorded(redis: Redis, ids: set[str]) -> set[str]:
    return {i for i in ids if await redis.exists(f"codeprov:event:{i}")}


async def drain(feed: EventsFeed) -> int:
    """Poll until a poll is not cut short; how many polls that took."""
    polls = 1
    first = await feed.tick()
    assert first is not None and first["truncated"] == 1  # the backlog is over one poll
    while (tally := await feed.tick()) is not None and tally["truncated"]:
        polls += 1
        assert polls < 50
    return polls


@pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])
async def test_a_backlog_over_one_poll_is_read_whole(
    redis: Redis, redis_url: str, newest_first: bool
) -> None:
    """A backlog larger than one poll's pages is read over bounded polls without skipping an
    event, whichever order Seam lists in and with the overlap on."""
    scenario = Scenario(devices=[DeviceSpec(id=f"lock-{n}", latency=Latency.fixed(0.2))
                                 for n in range(3)])
    async with Rig(redis_url, scenario, overrides={"events_poll": 0}) as rig:
        ids = await backlog(rig)
        transport = (lambda: NewestFirst(rig.transport())) if newest_first else None
        async with feeds(rig, transport=transport, limit=2, max_pages=2) as (feed,):
            await drain(feed)
            assert await recorded(redis, ids) == ids
            assert (await feed.tick()) is not None  # later polls go on from where it ended
        assert await recorded(redis, ids) == ids


async def waiting_stay(rig: Rig, booking_id: str = "B1") -> str:
    """A stay waiting for its lock (its code created, its next check days ahead), then its lock
    gone offline: an event that wakes it (`access_code.created` wakes nothing). Its job id."""
    await rig.enqueue(rig.stay(booking_id, days_ahead=10))

    async def waiting() -> bool:
        return (await rig.state(booking_id)).state is Phase.WAITING

    await rig.run_until(waiting)
    rig.sandbox.take_offline("lock-1")
    return job_id(booking_id, (await rig.state(booking_id)).seq, prefix="codeprov")


async def until(done: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await done():
            await asyncio.sleep(0.01)


async def test_sandbox_events_wake_the_waiting_stay(redis: Redis, redis_url: str) -> None:
    """A poll takes the sandbox's events of a waiting stay's code and moves its check to now."""
    async with Rig(redis_url, SLOW_LOCK, overrides={"events_poll": 0}) as rig:
        job = await waiting_stay(rig)
        assert (await redis.zscore("codeprov:queue", job) or 0) > (time.time() + 86400) * 1000
        async with feeds(rig) as (feed,):
            before = time.time() * 1000
            tally = await feed.tick()
        assert tally is not None and tally["taken"] >= 1 and tally["woken"] == 1
        moved = await redis.zscore("codeprov:queue", job)
        assert moved is not None and before <= moved <= time.time() * 1000


async def test_items_that_are_not_events_are_counted(redis: Redis, redis_url: str) -> None:
    """Items of a page that are not events are counted ignored_not_event; the rest are taken."""
    async with Rig(redis_url, SLOW_LOCK, overrides={"events_poll": 0}, wrap=WithJunk) as rig:
        await waiting_stay(rig)
        async with feeds(rig) as (feed,):
            tally = await feed.tick()
        assert tally is not None and tally["taken"] >= 1
        assert (await read_counts(redis, "codeprov"))["ignored_not_event"] == 2


async def test_only_the_lease_holder_polls(redis: Redis, redis_url: str) -> None:
    """Of two workers' feeds ticking in turn, only the first polls: one poller's requests."""
    async with Rig(redis_url, SLOW_LOCK) as rig, feeds(rig, 2) as (first, second):
        for _ in range(5):
            assert await first.tick() is not None
            assert await second.tick() is None
        assert (first.polls, second.polls, list_calls(rig)) == (5, 0, 5)
        assert await redis.get(lease_key("codeprov")) == b"worker-0"


async def test_a_stopped_feed_hands_the_lease_over(redis: Redis, redis_url: str) -> None:
    """A feed stopped with its worker frees the lease: the other worker's next tick polls."""
    async with Rig(redis_url, SLOW_LOCK) as rig, feeds(rig, 2) as (first, second):
        stop = start_feed(first, lambda reason: None)

        async def polled() -> bool:
            return first.polls >= 2

        await until(polled)
        await stop()
        assert await second.tick() is not None
        assert await redis.get(lease_key("codeprov")) == b"worker-1"


async def test_a_dead_holders_lease_expires(redis: Redis, redis_url: str) -> None:
    """A holder that stops ticking without releasing loses the lease after it expires."""
    async with Rig(redis_url, SLOW_LOCK) as rig, feeds(rig, 2) as (first, second):
        assert await first.tick() is not None
        assert 0 < await redis.pttl(lease_key("codeprov")) <= first.lease_ms
        assert await second.tick() is None

        async def taken_over() -> bool:
            return await second.tick() is not None

        await until(taken_over)
        assert await first.tick() is None


async def test_since_advances_and_the_overlap_is_read_again(redis: Redis, redis_url: str) -> None:
    """since moves to overlap before the newest event; the re-read counts duplicates, no wake."""
    async with Rig(redis_url, SLOW_LOCK, overrides={"events_poll": 0}) as rig:
        await waiting_stay(rig)
        async with feeds(rig, overlap=900) as (feed,):
            first = await feed.tick()
            again = await feed.tick()
        newest = max(datetime.fromisoformat(e["occurred_at"]) for e in rig.sandbox.events())
        stored = await redis.get(since_key("codeprov"))
        assert stored is not None
        assert datetime.fromisoformat(stored.decode()) == newest - timedelta(seconds=900)
        assert first is not None and again is not None and again["events"] == first["events"]
        counts = await read_counts(redis, "codeprov")
        assert (again["duplicate"], again["woken"]) == (first["events"], 0)
        assert (counts["duplicate"], counts["stays_woken"]) == (first["events"], 1)


async def test_since_is_never_older_than_the_catch_up(redis: Redis, redis_url: str) -> None:
    """A since days old, or unreadable, starts the poll catch_up ago instead."""
    async with Rig(redis_url, SLOW_LOCK) as rig, feeds(rig, catch_up=3600) as (feed,):
        for stored in ((rig.now - timedelta(days=3)).isoformat(), "not a time"):
            await redis.set(since_key("codeprov"), stored)
            before = rig.now
            since = await feed.read_since()
            assert before - timedelta(hours=1) <= since <= rig.now - timedelta(hours=1)


async def test_pages_are_read_up_to_the_bound(redis: Redis, redis_url: str) -> None:
    """A backlog over max_pages pages is read in bounded polls, each event taken once."""
    scenario = Scenario(devices=[DeviceSpec(id=f"lock-{n}", latency=Latency.fixed(0.2))
                                 for n in range(3)])
    async with Rig(redis_url, scenario, overrides={"events_poll": 0}) as rig:
        for n in range(3):
            await rig.enqueue(rig.stay(f"B{n}", device=n, days_ahead=10))

        async def all_waiting() -> bool:
            return all([(await rig.state(f"B{n}")).state is Phase.WAITING for n in range(3)])

        await rig.run_until(all_waiting)
        total = len(rig.sandbox.events())
        assert total > 2
        async with feeds(rig, limit=1, max_pages=2, overlap=0) as (feed,):
            first = await feed.tick()
            assert first is not None and (first["pages"], first["truncated"]) == (2, 1)
            while (tally := await feed.tick()) is not None and tally["truncated"]:
                pass
        counts = await read_counts(redis, "codeprov")
        assert counts["received"] - counts.get("duplicate", 0) == total


async def test_seam_5xx_is_logged_once_and_the_feed_goes_on(
    redis: Redis, redis_url: str
) -> None:
    """/events/list answering 503 for a while logs events_feed.failed once; then polls resume."""
    scenario = SLOW_LOCK.model_copy(update={"outages": [Outage(routes=[LIST], duration=3600)]})
    async with Rig(redis_url, scenario) as rig, feeds(rig) as (feed,):
        with capture_logs() as logs:
            stop = start_feed(feed, lambda reason: None)
            try:
                async def failed_thrice() -> bool:
                    return list_calls(rig, "503") >= 3

                await until(failed_thrice)
                rig.sandbox.clock.advance(3600)

                async def polled() -> bool:
                    return feed.polls >= 1

                await until(polled)
            finally:
                await stop()
        names = [e["event"] for e in logs]
        assert (names.count("events_feed.failed"), names.count("events_feed.recovered")) == (1, 1)
        failed = next(e for e in logs if e["event"] == "events_feed.failed")
        assert failed["status"] == 503


async def test_a_crash_is_reported_and_the_feed_restarted(redis: Redis, redis_url: str) -> None:
    """A Redis error that will not pass (WRONGTYPE) is reported down; fixed, the feed runs on."""
    reports: list[str | None] = []
    async with Rig(redis_url, SLOW_LOCK) as rig, feeds(rig) as (feed,):
        await redis.hset(since_key("codeprov"), "x", "1")  # type: ignore[misc]
        with capture_logs() as logs:
            stop = start_feed(feed, reports.append)
            try:
                async def reported() -> bool:
                    return any(reports)

                await until(reported)
                await redis.delete(since_key("codeprov"))

                async def recovered() -> bool:
                    return feed.polls >= 1 and reports[-1] is None

                await until(recovered)
            finally:
                await stop()
    assert "events_feed.crashed" in [e["event"] for e in logs]
    assert str(reports[0]).startswith("events feed crashed (ResponseError)")


async def test_a_worker_polls_and_its_events_wake(redis: Redis, redis_url: str) -> None:
    """A worker with CODEPROV_EVENTS_POLL set polls /events/list and takes the stay's events."""
    async with Rig(redis_url, SLOW_LOCK, overrides={"events_poll": 0.05}) as rig:
        await waiting_stay(rig)

        async def taken() -> bool:
            return (await read_counts(redis, "codeprov")).get("taken", 0) >= 1

        await rig.run_until(taken)
        assert list_calls(rig, "200") >= 1


async def test_poll_zero_polls_nothing(redis: Redis, redis_url: str) -> None:
    """With CODEPROV_EVENTS_POLL=0 a worker that provisions a stay never calls /events/list."""
    scenario = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.05))])
    async with Rig(redis_url, scenario, overrides={"events_poll": 0}) as rig:
        await rig.enqueue(rig.stay("B1", days_ahead=0.01))
        await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        assert list_calls(rig) == 0
