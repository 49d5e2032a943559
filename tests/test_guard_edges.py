"""The guard's edges: stays scheduled before the upgrade, late events, `--burst`, an event
before its code is indexed, a 4xx while guarded, a stale wake mark."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from arq.constants import job_key_prefix
from harness import Rig
from redis.asyncio import Redis
from svix.webhooks import Webhook
from test_guard import ONE_LOCK, Feed, gets, results, synthetic

from jobs.events import Events, SeamEvent, flowing_key, webhooks_key
from jobs.pipeline import _unlock
from jobs.state import Phase, StayState, StayStore
from jobs.step import JobInfo
from jobs.upgrade import guard_legacy
from worker.burst import BURST_HORIZON, only_guard_looks_left
from worker.settings import Settings
from worker.webhook import webhook_app

pytestmark = pytest.mark.anyio


async def scheduled(rig: Rig) -> StayState:
    assert (await rig.enqueue(rig.stay("B1", days_ahead=2))).result == "enqueued"
    await rig.run()
    state = await rig.state("B1")
    assert state.state is Phase.SCHEDULED
    return state


async def test_stay_scheduled_before_the_upgrade_is_guarded(redis: Redis, redis_url: str) -> None:
    """A record the previous version wrote scheduled (no job, no index, no `reported`) gets a
    guard look queued and indexed once, and its guard look tells the booking system nothing."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        state = await scheduled(rig)
        legacy = json.loads(await redis.get("codeprov:stay:B1") or b"{}")
        legacy.pop("reported")
        await redis.set("codeprov:stay:B1", json.dumps(legacy))
        await redis.delete("codeprov:queue", "codeprov:stays", "codeprov:device:lock-1",
                           f"{job_key_prefix}codeprov:B1:{state.seq}")  # no job: it was final
        store = StayStore(rig.pool)
        assert await guard_legacy(rig.pool, store, spread=0) == 1
        assert await guard_legacy(rig.pool, store, spread=0) is None  # once
        assert await redis.zscore("codeprov:stays", "B1") is not None
        assert await redis.smembers("codeprov:device:lock-1") == {b"B1"}  # type: ignore[misc]
        assert await redis.zcard("codeprov:queue") == 1
        before = gets(rig)
        await rig.run()
        assert gets(rig) == before + 1 and len(await results(redis)) == 1
        assert (await rig.state("B1")).seq == state.seq + 1


async def test_late_event_after_a_broken_read_needs_a_look(redis: Redis, redis_url: str) -> None:
    """An old `set_on_device` delivered after a read found the code broken: the woken step
    reads the code again instead of marking it scheduled."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        feed = Feed(rig)
        first = await scheduled(rig)
        rig.sandbox.take_offline("lock-1")
        await feed.deliver()
        await rig.run_until(lambda: _phase(rig, Phase.WAITING))
        broken = await rig.state("B1")
        assert broken.looked_at is not None and first.programming_since is not None
        await redis.set(flowing_key("codeprov"), "1", ex=3600)
        late = synthetic("late-1", "access_code.set_on_device", broken,
                         first.programming_since + timedelta(seconds=1))
        before = gets(rig)
        await Events(rig.pool, "codeprov", rig.settings.queue_name).take(late)
        await rig.run_until(lambda: _more_gets(rig, before))
        assert (await rig.state("B1")).state is Phase.WAITING


async def _phase(rig: Rig, phase: Phase) -> bool:
    return (await rig.state("B1")).state is phase


async def _more_gets(rig: Rig, before: int) -> bool:
    return gets(rig) > before


async def test_burst_waits_for_stays_due_soon(redis: Redis, redis_url: str) -> None:
    """`--burst` is not over while a waiting stay's next look is within BURST_HORIZON; one
    further off (a lock loading the code weeks ahead) waits for the next run; once every stay
    is scheduled only guard looks are left and it is over."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        await redis.set(flowing_key("codeprov"), "1", ex=3600)  # looks 15 minutes apart
        assert (await rig.enqueue(rig.stay("B1"))).result == "enqueued"
        await rig.run_until(lambda: _phase(rig, Phase.WAITING))
        assert await only_guard_looks_left(rig.pool, rig.settings.queue_name, "codeprov")
        [job] = await redis.zrange(rig.settings.queue_name, 0, -1)
        await redis.zadd(rig.settings.queue_name, {job: (time.time() + BURST_HORIZON / 2) * 1000})
        assert not await only_guard_looks_left(rig.pool, rig.settings.queue_name, "codeprov")
        code_id = (await rig.state("B1")).access_code_id
        assert code_id is not None
        on_lock = rig.sandbox.mark_scheduled_at(code_id)
        assert on_lock is not None
        rig.sandbox.clock.advance(max(0.0, (on_lock - rig.now).total_seconds()) + 0.1)
        await rig.make_due()
        await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        assert await only_guard_looks_left(rig.pool, rig.settings.queue_name, "codeprov")


async def test_event_before_its_code_is_indexed_is_taken_later(
    redis: Redis, redis_url: str
) -> None:
    """An event about a code no stay holds yet is not kept as seen: the same event again, once
    the code is indexed, wakes its stay."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        events = Events(rig.pool, "codeprov", rig.settings.queue_name)
        state = await scheduled(rig)
        early = SeamEvent(event_id="early-1", event_type="access_code.changed",
                          access_code_id="ac-not-yet", device_id="lock-1")
        assert (await events.take(early)).kind == "ignored_unmanaged"
        await redis.set("codeprov:code:ac-not-yet", "B1")
        await redis.set("codeprov:stay:B1", (await redis.get("codeprov:stay:B1") or b"").replace(
            str(state.access_code_id).encode(), b"ac-not-yet"))
        assert (await events.take(early)).kind == "taken"


class GetAnswers400(httpx.AsyncBaseTransport):
    """Seam answering 400 to every `/access_codes/get` once `on` (a guarded look)."""

    on = False

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if GetAnswers400.on and request.url.path == "/access_codes/get":
            body = {"error": {"type": "invalid_input", "message": "no"}}
            return httpx.Response(400, json=body, request=request)
        return await self.inner.handle_async_request(request)


async def test_guarded_stay_is_not_failed_by_a_4xx(redis: Redis, redis_url: str) -> None:
    """A guard look answered 400 leaves the stay scheduled and looks again later."""
    async with Rig(redis_url, ONE_LOCK, wrap=GetAnswers400) as rig:
        state = await scheduled(rig)
        GetAnswers400.on = True
        await rig.make_due()
        await rig.run()
        after = await rig.state("B1")
        assert after.state is Phase.SCHEDULED and after.seq == state.seq + 1
        assert after.failure is None and after.transient_failures == 1
    GetAnswers400.on = False


async def test_a_done_step_clears_its_wake_mark(redis: Redis, redis_url: str) -> None:
    """A step that queues no next job (superseded, done) deletes the stay's wake mark."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        from worker.wiring import build_deps

        deps = build_deps(rig.settings, rig.pool)
        try:
            await redis.set("codeprov:wake:B1", "1")
            await _unlock(deps, "B1", "codeprov:lock:B1", JobInfo("codeprov:B1:3"), None)
            assert await redis.exists("codeprov:wake:B1") == 0
        finally:
            await deps.seam.aclose()


async def test_verified_webhook_marks_events_flowing(redis: Redis, redis_url: str) -> None:
    """A verified webhook through the receiver sets events flowing and webhooks seen."""
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = Settings(redis_url=redis_url, seam_webhook_secret=secret)
    app = webhook_app(redis, settings)
    body = json.dumps({"event_id": "e1", "event_type": "access_code.changed",
                       "access_code_id": "ac-1"})
    headers = {"svix-id": "msg_1", "svix-timestamp": str(int(datetime.now(UTC).timestamp()))}
    headers["svix-signature"] = Webhook(secret).sign(
        "msg_1", datetime.now(UTC), body)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://receiver") as client:
        answer = await client.post("/webhooks/seam", content=body, headers=headers)
    assert answer.status_code == 200
    assert await redis.exists(flowing_key("codeprov"), webhooks_key("codeprov")) == 2


async def test_burst_is_not_held_by_a_cron_job_running_elsewhere(
    redis: Redis, redis_url: str
) -> None:
    """A due reconciler job that arq holds as running elsewhere (its in-progress key kept)
    does not keep `--burst` running once every stay is scheduled."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        await scheduled(rig)
        cron = "codeprov:reconcile_stays:1796171527123"
        await redis.zadd(rig.settings.queue_name, {cron: time.time() * 1000 - 1})
        await redis.set(f"arq:in-progress:{cron}", "1", ex=60)
        assert await only_guard_looks_left(rig.pool, rig.settings.queue_name, "codeprov")
