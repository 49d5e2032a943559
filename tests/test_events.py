"""jobs/events.py: an event is recorded once, finds its stay through the indexes commit writes,
and moves that stay's queued check to now; nothing else is added or moved."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from jobs.events import Events, SeamEvent, parse_event, read_counts
from jobs.payload import Stay
from jobs.state import CodeRef, Phase, StayState, StayStore
from worker.queue import connect, enqueue_step, job_id
from worker.settings import Settings

pytestmark = pytest.mark.anyio

QUEUE = "codeprov:queue"
DAY_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


async def stay_at(
    store: StayStore, booking_id: str, *, device: str = "lock-1", code: str | None = "ac_1",
    phase: Phase = Phase.WAITING, queued_in: float | None = 86400.0, **extra: Any,
) -> StayState:
    """A committed stay record (seq 1), its next check queued `queued_in` seconds ahead."""
    now = datetime.now(UTC)
    stay = Stay(booking_id=booking_id, device_id=device, starts_at=now + timedelta(days=3),
                ends_at=now + timedelta(days=5))
    state = StayState(stay=stay, enqueued_at=now, updated_at=now)
    assert await store.create(state)
    state.state, state.access_code_id, state.seq = phase, code, 1
    for name, value in extra.items():
        setattr(state, name, value)
    assert await store.commit(state, expected_seq=0)
    if queued_in is not None:
        assert isinstance(store.redis, ArqRedis)
        await enqueue_step(store.redis, booking_id, 1, prefix="codeprov", delay=queued_in)
    return state


def event(event_id: str, event_type: str = "access_code.set_on_device", **fields: str) -> SeamEvent:
    found = parse_event(
        SeamEvent(event_id=event_id, event_type=event_type, **fields).model_dump_json()
    )
    assert found is not None
    return found


async def score(redis: Redis, booking_id: str) -> float | None:
    found: float | None = await redis.zscore(QUEUE, job_id(booking_id, 1, prefix="codeprov"))
    return found


async def arq(redis_url: str) -> ArqRedis:
    return await connect(Settings(redis_url=redis_url))


async def test_commit_indexes_the_code_and_the_lock(redis: Redis, redis_url: str) -> None:
    """A committed record with a code id maps the code to the booking and the lock to its stays."""
    pool = await arq(redis_url)
    try:
        await stay_at(StayStore(pool), "B1", code="ac_9", device="lock-7")
        assert await redis.get("codeprov:code:ac_9") == b"B1"
        assert await redis.smembers("codeprov:device:lock-7") == {b"B1"}  # type: ignore[misc]
        assert 0 < await redis.ttl("codeprov:code:ac_9") <= 36 * 86400  # with the record
    finally:
        await pool.aclose()


@pytest.mark.parametrize("phase", [Phase.FAILED, Phase.CANCELLED])
async def test_final_commit_leaves_the_lock_index(
    redis: Redis, redis_url: str, phase: Phase
) -> None:
    """A stay committed failed or cancelled is removed from its lock's set of stays."""
    pool = await arq(redis_url)
    try:
        store = StayStore(pool)
        state = await stay_at(store, "B1", queued_in=None)
        state.state, state.seq = phase, 2
        assert await store.commit(state, expected_seq=1)
        assert await redis.smembers("codeprov:device:lock-1") == set()  # type: ignore[misc]
    finally:
        await pool.aclose()


async def test_scheduled_stay_stays_in_the_lock_index(redis: Redis, redis_url: str) -> None:
    """A scheduled stay is guarded: it stays in its lock's set, so the lock's events wake it."""
    pool = await arq(redis_url)
    try:
        store = StayStore(pool)
        state = await stay_at(store, "B1", queued_in=None)
        state.state, state.seq = Phase.SCHEDULED, 2
        assert await store.commit(state, expected_seq=1)
        assert await redis.smembers("codeprov:device:lock-1") == {b"B1"}  # type: ignore[misc]
    finally:
        await pool.aclose()


async def test_event_moves_the_queued_check_to_now(redis: Redis, redis_url: str) -> None:
    """An event for a waiting stay's code moves its queued job's score from tomorrow to now."""
    pool = await arq(redis_url)
    try:
        await stay_at(StayStore(pool), "B1")
        assert (await score(redis, "B1") or 0) > now_ms() + DAY_MS / 2
        at = now_ms()
        outcome = await Events(redis, "codeprov", QUEUE).take(
            event("e1", access_code_id="ac_1"), now_ms=at
        )
        assert (outcome.kind, outcome.woken) == ("taken", ("B1",))
        assert await score(redis, "B1") == at
    finally:
        await pool.aclose()


async def test_duplicate_event_does_nothing(redis: Redis, redis_url: str) -> None:
    """The same event_id a second time is answered duplicate and moves no job."""
    pool = await arq(redis_url)
    try:
        await stay_at(StayStore(pool), "B1")
        events = Events(redis, "codeprov", QUEUE)
        await events.take(event("e1", access_code_id="ac_1"))
        await redis.zadd(QUEUE, {job_id("B1", 1, prefix="codeprov"): now_ms() + DAY_MS})
        again = await events.take(event("e1", access_code_id="ac_1"))
        assert again.kind == "duplicate"
        assert (await score(redis, "B1") or 0) > now_ms() + DAY_MS / 2
        counts = await read_counts(redis, "codeprov")
        assert (counts["received"], counts["duplicate"], counts["taken"]) == (2, 1, 1)
        assert 6 * 86400 < await redis.ttl("codeprov:event:e1") <= 7 * 86400
    finally:
        await pool.aclose()


async def test_due_job_is_not_moved_later(redis: Redis, redis_url: str) -> None:
    """A check already due keeps its earlier score: an event only ever brings a check forward."""
    pool = await arq(redis_url)
    try:
        await stay_at(StayStore(pool), "B1", queued_in=-60)
        before = await score(redis, "B1")
        outcome = await Events(redis, "codeprov", QUEUE).take(event("e1", access_code_id="ac_1"))
        assert outcome.woken == ()
        assert await score(redis, "B1") == before
    finally:
        await pool.aclose()


async def test_missing_job_is_not_added_but_marked(redis: Redis, redis_url: str) -> None:
    """A stay whose next job is not queued (a step between commit and enqueue) gets no job from
    an event, but a wake mark its step's unlock reads."""
    pool = await arq(redis_url)
    try:
        await stay_at(StayStore(pool), "B1", queued_in=None)
        outcome = await Events(redis, "codeprov", QUEUE).take(event("e1", access_code_id="ac_1"))
        assert (outcome.stays, outcome.woken) == (("B1",), ())
        assert await redis.zcard(QUEUE) == 0
        assert await redis.exists("codeprov:wake:B1")
        assert (await read_counts(redis, "codeprov"))["stays_marked"] == 1
    finally:
        await pool.aclose()


async def test_code_no_longer_the_stays_is_ignored(redis: Redis, redis_url: str) -> None:
    """An event for a code the stay no longer holds (moved, its removal done) wakes nothing."""
    pool = await arq(redis_url)
    try:
        store = StayStore(pool)
        state = await stay_at(store, "B1", code="ac_old", queued_in=None)
        state.access_code_id, state.seq = "ac_new", 2
        assert await store.commit(state, expected_seq=1)
        await enqueue_step(pool, "B1", 2, prefix="codeprov", delay=86400)
        outcome = await Events(redis, "codeprov", QUEUE).take(event("e1", access_code_id="ac_old"))
        assert outcome.kind == "ignored_unmanaged"
    finally:
        await pool.aclose()


async def test_code_being_removed_still_wakes(redis: Redis, redis_url: str) -> None:
    """An event for a code the stay still has to remove (in to_delete) wakes the stay."""
    pool = await arq(redis_url)
    try:
        ref = CodeRef(device_id="lock-1", access_code_id="ac_old", name="n")
        await stay_at(StayStore(pool), "B1", code="ac_old", to_delete=[ref])
        outcome = await Events(redis, "codeprov", QUEUE).take(
            event("e1", "access_code.removed_from_device", access_code_id="ac_old")
        )
        assert outcome.woken == ("B1",)
    finally:
        await pool.aclose()


async def test_device_event_wakes_the_locks_stays(redis: Redis, redis_url: str) -> None:
    """device.disconnected wakes every waiting stay of that lock, and no other lock's."""
    pool = await arq(redis_url)
    try:
        store = StayStore(pool)
        await stay_at(store, "B1", code="ac_1", device="lock-1")
        await stay_at(store, "B2", code="ac_2", device="lock-1")
        await stay_at(store, "B3", code="ac_3", device="lock-2")
        outcome = await Events(redis, "codeprov", QUEUE).take(
            event("e1", "device.disconnected", device_id="lock-1")
        )
        assert sorted(outcome.woken) == ["B1", "B2"]
        assert (await score(redis, "B3") or 0) > now_ms() + DAY_MS / 2
    finally:
        await pool.aclose()


async def test_unknown_type_is_counted_once_and_ignored(redis: Redis) -> None:
    """An event type we do not act on is counted ignored_type once; the same event again (the
    feed's overlap, a Svix resend) counts as a duplicate."""
    events = Events(redis, "codeprov", QUEUE)
    low_battery = event("e1", "device.low_battery", device_id="lock-1")
    assert (await events.take(low_battery)).kind == "ignored_type"
    assert (await events.take(low_battery)).kind == "duplicate"
    counts = await read_counts(redis, "codeprov")
    assert (counts["received"], counts["ignored_type"], counts["duplicate"]) == (2, 1, 1)


def test_non_events_are_not_parsed() -> None:
    """Bodies that are not a JSON object with event_id and event_type parse to None."""
    for body in (b"[]", b"{}", b'{"event_id": "e1"}', b"\xff", b"not json", b'"x"'):
        assert parse_event(body) is None, body


def test_summary_keeps_no_pin() -> None:
    """A parsed event keeps only routing fields: the PIN in `code` is dropped."""
    parsed = parse_event(b'{"event_id":"e","event_type":"access_code.set_on_device","code":"1234"}')
    assert parsed is not None
    assert "1234" not in parsed.model_dump_json()


async def test_stats_show_the_event_counters(redis: Redis, redis_url: str) -> None:
    """`codeprov stats` and /metrics carry the event counters by name."""
    from worker.stats import collect, render_prometheus

    await Events(redis, "codeprov", QUEUE).take(event("e1", access_code_id="ac_none"))
    snapshot = await collect(redis, Settings(redis_url=redis_url))
    assert snapshot.as_dict()["events"] == {"ignored_unmanaged": 1, "received": 1}
    assert 'codeprov_events_total{outcome="ignored_unmanaged"} 1' in render_prometheus(snapshot)
