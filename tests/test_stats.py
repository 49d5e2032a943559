"""`codeprov stats` and the metrics endpoint: what is due now, deferred, running, and who works."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis
from click.testing import CliRunner
from redis.asyncio import Redis

from jobs.payload import Stay
from jobs.state import Phase, StayState, StayStore
from worker.cli import main
from worker.health import Heartbeat
from worker.queue import connect, enqueue_step, job_id
from worker.settings import Settings
from worker.stats import (
    Stats,
    StaysCache,
    collect,
    metrics_app,
    render_prometheus,
    render_table,
)

pytestmark = pytest.mark.anyio
NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, seam_api_key="k")


@pytest.fixture
async def pool(redis: Redis, settings: Settings) -> AsyncIterator[ArqRedis]:
    arq = await connect(settings)
    try:
        yield arq
    finally:
        await arq.aclose()


async def add_stay(redis: Redis, booking_id: str, phase: Phase) -> None:
    state = StayState(
        stay=Stay(booking_id=booking_id, device_id="lock-1"),
        state=phase,
        enqueued_at=NOW,
        updated_at=NOW,
    )
    assert await StayStore(redis).create(state)


def snapshot(**over: object) -> Stats:
    values: dict[str, object] = dict(
        queue="codeprov:queue",
        at=NOW,
        due_now=3,
        deferred=7,
        in_progress=1,
        workers_alive=2,
        stays={"queued": 1, "scheduled": 4},
    )
    values.update(over)
    return Stats(**values)  # type: ignore[arg-type]


async def test_due_now_excludes_deferred_checks(pool: ArqRedis, settings: Settings) -> None:
    """A job due now counts in due_now; one deferred an hour counts only in deferred."""
    assert await enqueue_step(pool, "B1", 0, prefix="codeprov")
    assert await enqueue_step(pool, "B2", 0, prefix="codeprov", delay=3600)
    stats = await collect(pool, settings)
    assert (stats.due_now, stats.deferred, stats.in_progress) == (1, 1, 0)


async def test_job_due_this_millisecond_counts_as_due(pool: ArqRedis, settings: Settings) -> None:
    """A job scored at arq's rounded `now` is due now; one scored a millisecond later is not."""
    now = NOW.replace(microsecond=600)  # 0.6 ms past a millisecond: arq rounds it up
    now_ms = round(now.timestamp() * 1000)
    assert await enqueue_step(pool, "B1", 0, prefix="codeprov")
    assert await enqueue_step(pool, "B2", 0, prefix="codeprov")
    first, second = job_id("B1", 0, prefix="codeprov"), job_id("B2", 0, prefix="codeprov")
    await pool.zadd(settings.queue_name, {first: now_ms, second: now_ms + 1})
    stats = await collect(pool, settings, now=now)
    assert (stats.due_now, stats.deferred) == (1, 1)


async def test_in_progress_counts_only_our_queues_jobs(pool: ArqRedis, settings: Settings) -> None:
    """A running job of ours counts; another queue's in-progress key does not."""
    assert await enqueue_step(pool, "B1", 0, prefix="codeprov")
    assert await enqueue_step(pool, "B2", 0, prefix="codeprov")
    await pool.set(f"arq:in-progress:{job_id('B1', 0, prefix='codeprov')}", b"1")
    await pool.set("arq:in-progress:someone-else", b"1")
    stats = await collect(pool, settings)
    assert (stats.due_now, stats.in_progress) == (2, 1)


async def test_stays_are_counted_per_state(pool: ArqRedis, settings: Settings) -> None:
    """Every state appears, zero or not; records are counted by their state."""
    await add_stay(pool, "B1", Phase.QUEUED)
    await add_stay(pool, "B2", Phase.WAITING)
    await add_stay(pool, "B3", Phase.WAITING)
    await add_stay(pool, "B4", Phase.SCHEDULED)
    stats = await collect(pool, settings)
    assert stats.stays == {
        "queued": 1,
        "provisioning": 0,
        "waiting_for_device": 2,
        "scheduled": 1,
        "failed": 0,
        "cancelled": 0,
    }


async def test_workers_alive_come_from_heartbeats(
    pool: ArqRedis, settings: Settings, tmp_path: Path
) -> None:
    """Each beating worker counts once."""
    for i in range(3):
        await Heartbeat(pool, "codeprov", tmp_path / f"beat{i}").beat()
    assert (await collect(pool, settings)).workers_alive == 3


def test_json_shape_is_the_contract() -> None:
    """`stats --json` has exactly the documented fields."""
    data = snapshot().as_dict()
    assert set(data) == {
        "due_now",
        "deferred",
        "in_progress",
        "stays",
        "workers_alive",
        "seam_workspace_down",
        "events",
        "queue",
        "at",
    }
    assert data["at"] == "2030-01-01T00:00:00+00:00"


def test_table_is_aligned() -> None:
    """The human output is one aligned name/value column pair."""
    lines = render_table(snapshot()).splitlines()
    assert lines[1].split() == ["due", "now", "3"]
    assert (
        len(
            {line.index(value) for line, value in zip(lines, ["codeprov:queue", "3"], strict=False)}
        )
        == 1
    )


def test_prometheus_text_names_every_gauge() -> None:
    """Each gauge has HELP and TYPE lines; stays carry a state label."""
    text = render_prometheus(snapshot())
    assert 'codeprov_jobs_due_now{queue="codeprov:queue"} 3' in text
    assert 'codeprov_stays{state="scheduled"} 4' in text
    assert "codeprov_workers_alive 2" in text
    for name in ("jobs_due_now", "jobs_deferred", "jobs_in_progress", "workers_alive", "stays"):
        assert f"# TYPE codeprov_{name} gauge" in text


def test_prometheus_label_values_are_escaped() -> None:
    """A queue name with a quote cannot break the exposition format."""
    assert 'queue="a\\"b"' in render_prometheus(snapshot(queue='a"b'))


async def test_due_endpoint_serves_keda(pool: ArqRedis, settings: Settings) -> None:
    """/due answers the JSON KEDA's metrics-api scaler reads (valueLocation `due_now`)."""
    assert await enqueue_step(pool, "B1", 0, prefix="codeprov")
    transport = httpx.ASGITransport(app=metrics_app(pool, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
        due = (await client.get("/due")).json()
        metrics = await client.get("/metrics")
    assert due["due_now"] == 1 and due["queue"] == "codeprov:queue"
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'codeprov_jobs_due_now{queue="codeprov:queue"} 1' in metrics.text


async def test_stays_are_rescanned_only_when_stale(pool: ArqRedis) -> None:
    """The metrics server reuses stay counts until they are older than max_age."""
    now = [0.0]
    cache = StaysCache(60, clock=lambda: now[0])
    await add_stay(pool, "B1", Phase.QUEUED)
    assert (await cache.get(pool, "codeprov"))["queued"] == 1
    await add_stay(pool, "B2", Phase.QUEUED)
    assert (await cache.get(pool, "codeprov"))["queued"] == 1
    now[0] = 61.0
    assert (await cache.get(pool, "codeprov"))["queued"] == 2


def test_stats_command_prints_json(settings: Settings, redis_url: str) -> None:
    """`codeprov stats --json` prints one JSON object with the counts."""

    async def deferred_job() -> None:
        arq = await connect(settings)
        await arq.flushdb()
        hour = timedelta(hours=1).total_seconds()
        assert await enqueue_step(arq, "B1", 0, prefix="codeprov", delay=hour)
        await arq.aclose()

    asyncio.run(deferred_job())
    result = CliRunner().invoke(main, ["stats", "--json"], env={"REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["due_now"], data["deferred"], data["workers_alive"]) == (0, 1, 0)
