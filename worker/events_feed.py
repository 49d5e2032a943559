"""The events feed: one worker of the cluster polls Seam's `/events/list` and hands every event
to the one event path (`jobs.events.Events.take`), as the webhook receiver does.

- **One poller at a time:** a lease `{prefix}:events:lease` (SET NX PX with the worker id),
  renewed by its holder before every page; a worker that stops releases it, one that dies lets
  it expire (2 intervals + one request's timeout), and another worker takes over.
- **No cursor at Seam:** `{prefix}:events:since` (ISO time) is where the next poll starts. It
  is set `overlap` back from the newest `occurred_at` seen, because some brands' events are
  listed ~10 minutes after they occurred: a poll that went past them would never see them.
  The overlap's events are read again and answered `duplicate` by `Events.take` (de-duplicated
  by event_id), so they count as duplicates and wake nothing twice.
- **Catch-up:** a `since` older than `catch_up` (a feed that was off, a first start) is moved
  to `catch_up` ago: older events are about stays whose checks have long run anyway.
- **Paging:** `limit` + `unstable_offset`, at most `max_pages` per poll. Seam does not document
  the order. Cut short oldest first, the next poll goes on from the newest seen (less the
  overlap, unless that would not move it); cut short newest first, the next polls read
  backwards (`between` since and the oldest read, `{prefix}:events:window`) until they reach
  `since`, which then moves on: no event between is skipped either way.
- **Failures:** a Seam error or a Redis outage is logged once per outage (`events_feed.failed`)
  and the next interval polls again; an event that is not one is counted `ignored_not_event`;
  a crash is logged (`events_feed.crashed`), reported, and the feed restarted with backoff.
  Event bodies are never logged: they carry PINs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from jobs.events import Events, SeamEvent, webhooks_key
from jobs.intake import TRANSIENT
from worker.deps import Clock
from worker.errors import RateLimitWait, SeamError
from worker.events_cursor import Seen, Window, parse_time, window_key
from worker.logs import get_logger
from worker.seam import SeamClient
from worker.supervise import Report, supervise

__all__ = ["EventsFeed", "lease_key", "since_key", "start_feed"]

# KEYS[1] the lease. ARGV[1] our worker id, ARGV[2] the lease's new TTL in ms.
# Returns 1: it is ours and now lasts ARGV[2] more; 0: not ours (another worker's, or expired):
# nothing is changed. A plain PEXPIRE could extend another worker's lease after ours expired.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] the lease. ARGV[1] our worker id. Returns 1: ours, deleted; 0: not ours, left as is.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lease_key(prefix: str) -> str:
    return f"{prefix}:events:lease"


def since_key(prefix: str) -> str:
    return f"{prefix}:events:since"




@dataclass
class EventsFeed:
    redis: Redis
    seam: SeamClient
    events: Events
    worker_id: str
    clock: Clock
    prefix: str = "codeprov"
    interval: float = 30.0
    webhook_interval: float = 900.0  # while webhooks arrive, the feed only catches up
    overlap: float = 900.0
    catch_up: float = 86400.0
    request_timeout: float = 6.0
    limit: int = 500  # Seam's default page
    max_pages: int = 10
    restart_base: float = 1.0
    restart_cap: float = 60.0
    polls: int = field(default=0, init=False)  # polls this feed made (it held the lease)
    _failing: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._cadence = self.interval  # the interval in effect (next_interval)
        self._extend = self.redis.register_script(_EXTEND)
        self._release = self.redis.register_script(_RELEASE)

    @property
    def lease_ms(self) -> int:
        """Two intervals (the one in effect) and one request: a holder that misses a beat
        keeps it."""
        return max(1, int((2 * self._cadence + self.request_timeout) * 1000))

    async def next_interval(self) -> float:
        """`interval`, or `webhook_interval` while webhooks arrive (they carry the news)."""
        try:
            webhooks = await self.redis.exists(webhooks_key(self.prefix))
        except TRANSIENT:
            webhooks = 0
        self._cadence = self.webhook_interval if webhooks else self.interval
        return self._cadence

    async def hold(self) -> bool:
        """Extend our lease, or take it if free: whether this worker is the poller now."""
        key = lease_key(self.prefix)
        if await self._extend(keys=[key], args=[self.worker_id, self.lease_ms]):
            return True
        return bool(await self.redis.set(key, self.worker_id, nx=True, px=self.lease_ms))

    async def release(self) -> None:
        """Give the lease up (a stopping worker): another worker polls at its next interval."""
        await self._release(keys=[lease_key(self.prefix)], args=[self.worker_id])

    async def tick(self) -> Counter[str] | None:
        """Poll once if this worker holds the lease: the poll's counts, or None (not ours)."""
        if not await self.hold():
            return None
        return await self.poll()

    async def poll(self) -> Counter[str]:
        """Read every page from `since` (or the backward window), take each event, move on."""
        since, window = await self.read_since(), await self.read_window()
        tally: Counter[str] = Counter()
        seen = Seen()
        for page in range(self.max_pages):
            if page and not await self.hold():
                tally["truncated"] += 1  # the lease went to another worker mid-poll
                break
            items = await self.seam.list_events(
                since, limit=self.limit, offset=page * self.limit,
                until=window.until if window else None,
            )
            tally["pages"] += 1
            for item in items:
                seen.add(await self._take(item, tally))
            if len(items) < self.limit:
                break
        else:
            tally["truncated"] += 1
        await self._advance(since, seen, window, truncated=bool(tally["truncated"]))
        await self.events.note_alive(webhook=False)
        self.polls += 1
        get_logger().debug("events_feed.polled", since=since.isoformat(), **tally)
        return tally

    async def read_window(self) -> Window | None:
        raw = await self.redis.get(window_key(self.prefix))
        return None if raw is None else Window.parse(raw)

    async def read_since(self) -> datetime:
        """Where this poll starts: the stored `since`, never before `catch_up` ago."""
        floor = self.clock() - timedelta(seconds=self.catch_up)
        stored = parse_time(await self.redis.get(since_key(self.prefix)))
        return floor if stored is None or stored < floor else stored

    async def _take(self, item: Any, tally: Counter[str]) -> datetime | None:
        """Hand one item to Events.take; its occurred_at (None if unknown or not an event)."""
        try:
            event = SeamEvent.model_validate(item)
        except ValidationError:
            await self.events.count("received", "ignored_not_event")
            tally["ignored_not_event"] += 1
            return None
        outcome = await self.events.take(event)
        tally["events"] += 1
        tally[outcome.kind] += 1
        tally["woken"] += len(outcome.woken)
        return parse_time(event.occurred_at)

    async def _advance(
        self, since: datetime, seen: Seen, window: Window | None, *, truncated: bool
    ) -> None:
        """Where the next poll starts. Seam does not document its order: pages that came newest
        first and were cut short leave older events unread, so the next polls read backwards
        (`between` since and the oldest read) before `since` moves on to `resume`."""
        overlap = timedelta(seconds=self.overlap)
        if seen.newest is None or seen.oldest is None:
            if window is not None and not truncated:
                await self._close_window(since, window)
            return  # nothing seen: the same since again (read_since's floor ages it)
        if truncated and seen.newest_first:
            resume = window.resume if window else seen.newest - overlap
            # 1 ms past the oldest read: `between` excludes its ends, events at that instant stay
            until = Window(until=seen.oldest + timedelta(milliseconds=1), resume=resume)
            await self.redis.set(window_key(self.prefix), until.dump())
        elif window is not None and not truncated:
            await self._close_window(since, window)
        else:
            start = seen.newest - overlap
            if truncated and start <= since:
                start = seen.newest  # a page of events all within the overlap: move on anyway
            if truncated and start <= since:
                # More events at one instant than a poll reads: past them, or never on again.
                start = since + timedelta(milliseconds=1)
                get_logger().warning("events_feed.skipped", at=since.isoformat(),
                                     message="more events at one instant than one poll reads")
            if start > since:
                await self.redis.set(since_key(self.prefix), start.isoformat())

    async def _close_window(self, since: datetime, window: Window) -> None:
        """The backward read reached `since`: everything up to `resume` has been read."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if window.resume > since:
                pipe.set(since_key(self.prefix), window.resume.isoformat())
            pipe.delete(window_key(self.prefix))
            await pipe.execute()

    async def run(self, on_running: Callable[[], None] = lambda: None) -> None:
        """Poll every interval until cancelled; Seam and Redis failures never end it."""
        while True:
            await asyncio.sleep(await self.next_interval())
            try:
                await self.tick()
            except RateLimitWait:
                continue  # the workspace budget is spent: jobs come first, the feed waits
            except (SeamError, *TRANSIENT) as exc:
                self._failed(exc)
                continue
            if self._failing:
                self._failing = False
                get_logger().info("events_feed.recovered")
            on_running()

    def _failed(self, exc: Exception) -> None:
        """Logged once per outage: the next interval tries again anyway."""
        if self._failing:
            return
        self._failing = True
        fields: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
        if isinstance(exc, SeamError):
            fields |= {"status": exc.status, "seam_request_id": exc.request_id}
        get_logger().warning("events_feed.failed", retry_in_s=self.interval, **fields)

    async def serve(self, report: Report) -> None:
        """`run` until cancelled; a crash is logged, reported, and restarted with backoff."""
        await supervise("events_feed", "events feed", self.run, report, base=self.restart_base,
                        cap=self.restart_cap)


def start_feed(feed: EventsFeed, report: Report) -> Callable[[], Awaitable[None]]:
    """Run the feed supervised; the returned coroutine function stops it and frees its lease."""
    task = asyncio.create_task(feed.serve(report), name=f"codeprov-events-feed-{feed.worker_id}")

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:  # bounded: a Redis that hangs must not hold up the worker's shutdown
            async with asyncio.timeout(1.0):
                await feed.release()
        except Exception:  # Redis gone or hung: the lease expires by itself
            get_logger().debug("events_feed.release_failed")

    return stop


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
