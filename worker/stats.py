"""What the queue holds and who works on it: `codeprov stats` and `codeprov metrics`.

Scale on `due_now`, not on `ZCARD` of the queue: arq keeps deferred checks (due later) and
running jobs in the same sorted set, so ZCARD grows with every stay waiting for its lock even
when nothing is left to do now. `due_now` is `ZCOUNT queue -inf now`: jobs whose time has come,
running or waiting for a free slot, i.e. the concurrency the workers need right now.

Costs: the queue counts are O(log N) plus one EXISTS per due job; workers come from an index
(worker.health). Stays per state read every `{prefix}:stay:*` record (SCAN + MGET: O(stays
retained, final ones included), a few MB per 10k stays): fine on demand, so the metrics server
refreshes them at most once a minute.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import to_unix_ms
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from jobs.events import read_counts
from jobs.state import Phase
from jobs.workspace import workspace_down
from worker.health import count_alive
from worker.settings import Settings

CHUNK = 1000
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Stats:
    queue: str
    at: datetime
    due_now: int
    deferred: int
    in_progress: int
    workers_alive: int
    stays: dict[str, int]
    seam_workspace_down: str | None = None  # the outage's error (jobs/workspace.py), if any
    events: dict[str, int] = field(default_factory=dict)  # Seam events' counters (jobs/events.py)

    def as_dict(self) -> dict[str, Any]:
        """The `codeprov stats --json` shape: a contract, keep the field names."""
        return {
            "due_now": self.due_now,
            "deferred": self.deferred,
            "in_progress": self.in_progress,
            "stays": dict(self.stays),
            "workers_alive": self.workers_alive,
            "seam_workspace_down": self.seam_workspace_down,
            "events": dict(self.events),
            "queue": self.queue,
            "at": self.at.isoformat(),
        }


async def queue_counts(redis: Redis, queue: str, now_ms: int) -> tuple[int, int, int]:
    """(due now, deferred, in progress) for one arq queue, scores in ms as arq writes them."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(queue, "-inf", now_ms)
        pipe.zcount(queue, f"({now_ms}", "+inf")
        pipe.zrangebyscore(queue, "-inf", now_ms)
        due, deferred, due_ids = await pipe.execute()
    # A running job stays in the queue with the score it was picked at (<= now), so the
    # in-progress keys of our jobs are among the due ids: exact for this queue, no SCAN.
    in_progress = 0
    for start in range(0, len(due_ids), CHUNK):
        keys = [in_progress_key_prefix + _text(i) for i in due_ids[start : start + CHUNK]]
        in_progress += int(await redis.exists(*keys))
    return int(due), int(deferred), in_progress


def due_ms(now: datetime) -> int:
    """`now` as the score arq compares with: it rounds to the ms (truncating would count a job
    enqueued in this same ms as deferred while a worker already picks it)."""
    return to_unix_ms(now)


async def count_stays(redis: Redis, prefix: str) -> dict[str, int]:
    """Stays per state, from every state record (see the module docstring for the cost)."""
    counts: Counter[str] = Counter({phase.value: 0 for phase in Phase})
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{_glob_escape(prefix)}:stay:*", count=CHUNK):
        batch.append(key)
        if len(batch) == CHUNK:
            counts.update(_states(await redis.mget(batch)))
            batch = []
    if batch:
        counts.update(_states(await redis.mget(batch)))
    return dict(counts)


async def collect(
    redis: Redis,
    settings: Settings,
    *,
    now: datetime | None = None,
    stays: dict[str, int] | None = None,
) -> Stats:
    """A snapshot; pass `stays` to reuse counts read earlier instead of scanning again."""
    now = now or datetime.now(UTC)
    due, deferred, in_progress = await queue_counts(redis, settings.queue_name, due_ms(now))
    return Stats(
        queue=settings.queue_name,
        at=now,
        due_now=due,
        deferred=deferred,
        in_progress=in_progress,
        workers_alive=await count_alive(redis, settings.key_prefix, now.timestamp()),
        seam_workspace_down=await workspace_down(redis, settings.key_prefix),
        stays=stays if stays is not None else await count_stays(redis, settings.key_prefix),
        events=await read_counts(redis, settings.key_prefix),
    )


def render_table(stats: Stats) -> str:
    rows = [
        ("queue", stats.queue),
        ("due now", stats.due_now),
        ("deferred", stats.deferred),
        ("in progress", stats.in_progress),
        ("workers alive", stats.workers_alive),
        ("seam workspace", f"DOWN: {stats.seam_workspace_down}" if stats.seam_workspace_down
         else "ok"),
    ]
    rows += [(f"stays {state}", n) for state, n in stats.stays.items()]
    rows += [(f"events {name}", n) for name, n in stats.events.items()]
    rows.append(("at", stats.at.isoformat(timespec="seconds")))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def render_prometheus(stats: Stats) -> str:
    queue = f'queue="{_label(stats.queue)}"'
    lines: list[str] = []
    for name, help_text, samples in (
        (
            "codeprov_jobs_due_now",
            "Jobs whose due time has come, running or waiting for a slot.",
            [(queue, stats.due_now)],
        ),
        ("codeprov_jobs_deferred", "Jobs due later (deferred checks).", [(queue, stats.deferred)]),
        ("codeprov_jobs_in_progress", "Jobs a worker is running.", [(queue, stats.in_progress)]),
        (
            "codeprov_workers_alive",
            "Workers whose heartbeat has not expired.",
            [("", stats.workers_alive)],
        ),
        (
            "codeprov_seam_workspace_down",
            "1 while Seam refuses the workspace's API key or endpoint (see codeprov stats).",
            [("", int(stats.seam_workspace_down is not None))],
        ),
        (
            "codeprov_stays",
            "Stays per state (refreshed at most once a minute).",
            [(f'state="{_label(s)}"', n) for s, n in stats.stays.items()],
        ),
    ):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [
            f"{name}{{{labels}}} {value}" if labels else f"{name} {value}"
            for labels, value in samples
        ]
    name = "codeprov_events_total"  # counters since the first event, across all receivers
    lines += [f"# HELP {name} Seam events by outcome (jobs/events.py).", f"# TYPE {name} counter"]
    lines += [f'{name}{{outcome="{_label(k)}"}} {n}' for k, n in stats.events.items()]
    return "\n".join(lines) + "\n"


class StaysCache:
    """Stays per state, recounted at most every `max_age` seconds, one scan at a time."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.clock = max_age, clock
        self._counts: dict[str, int] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, redis: Redis, prefix: str) -> dict[str, int]:
        async with self._lock:
            if self._counts is None or self.clock() - self._read_at >= self.max_age:
                self._counts = await count_stays(redis, prefix)
                self._read_at = self.clock()
            return self._counts


def metrics_app(redis: Redis, settings: Settings, *, stays_every: float = 60.0) -> Starlette:
    """`/metrics` (Prometheus text), `/due` (JSON for KEDA's metrics-api scaler), `/healthz`."""
    cache = StaysCache(stays_every)

    async def metrics(_: Request) -> Response:
        stays = await cache.get(redis, settings.key_prefix)
        snapshot = await collect(redis, settings, stays=stays)
        return PlainTextResponse(render_prometheus(snapshot), media_type=PROMETHEUS_TYPE)

    async def due(_: Request) -> Response:
        now = datetime.now(UTC)
        due_now, _deferred, _running = await queue_counts(redis, settings.queue_name, due_ms(now))
        return JSONResponse(
            {"due_now": due_now, "queue": settings.queue_name, "at": now.isoformat()}
        )

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[Route("/metrics", metrics), Route("/due", due), Route("/healthz", healthz)]
    )


async def read_stats(settings: Settings) -> Stats:
    from worker.queue import connect

    redis = await connect(settings)
    try:
        return await collect(redis, settings)
    finally:
        await redis.aclose()


async def serve_metrics(settings: Settings, host: str, port: int, stays_every: float) -> None:
    import uvicorn

    from worker.queue import connect

    redis = await connect(settings)
    try:
        config = uvicorn.Config(
            metrics_app(redis, settings, stays_every=stays_every),
            host=host,
            port=port,
            access_log=False,
            log_level="warning",
        )
        await uvicorn.Server(config).serve()
    finally:
        await redis.aclose()


def _states(raws: list[bytes | None]) -> Counter[str]:
    found: Counter[str] = Counter()
    for raw in raws:
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            state = json.loads(raw).get("state")
        except (ValueError, AttributeError):
            state = None
        found[state if isinstance(state, str) else "unreadable"] += 1
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
