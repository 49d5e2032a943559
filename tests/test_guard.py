"""jobs/guard.py: a scheduled code is guarded until check-out. What breaks later is logged once
and told to the booking system; events wake the stay, and say `scheduled` without a `get`.

Events reach the stays here as the feed hands them over: every sandbox event not yet taken goes
through `Events.take`, the one path of the feed and the webhook receiver.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from harness import Rig
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs.events import Events, SeamEvent, flowing_key, webhooks_key
from jobs.state import Phase, StayState
from seam_sandbox import DeviceSpec, Latency, Sandbox, SandboxClock, Scenario
from worker.events_feed import EventsFeed
from worker.seam import SeamClient
from worker.wiring import shared_limiter

pytestmark = pytest.mark.anyio

ONE_LOCK = Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0.2))])
GET, CREATE = "/access_codes/get", "/access_codes/create"


class Feed:
    """Hands the sandbox's new events to the event path, as the events feed would."""

    def __init__(self, rig: Rig) -> None:
        self.rig, self.taken = rig, set[str]()
        self.events = Events(rig.pool, "codeprov", rig.settings.queue_name)

    async def deliver(self) -> int:
        fresh = [e for e in self.rig.sandbox.events() if e["event_id"] not in self.taken]
        for item in fresh:
            self.taken.add(item["event_id"])
            await self.events.take(SeamEvent.model_validate(item))
        return len(fresh)


async def results(redis: Redis) -> list[dict[str, str]]:
    entries = await redis.xrange("codeprov:results")
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def requests(rig: Rig, route: str) -> int:
    return sum(rig.sandbox.stats()["requests"].get(route, {}).values())


def gets(rig: Rig) -> int:
    return requests(rig, GET)


def counted(logs: list[MutableMapping[str, Any]]) -> Counter[str]:
    return Counter(str(e["event"]) for e in logs)


async def scheduled_stay(rig: Rig, feed: Feed) -> StayState:
    assert (await rig.enqueue(rig.stay("B1"))).result == "enqueued"
    await rig.run()
    await feed.deliver()  # the events of getting there: the stay is scheduled already
    await rig.run()
    state = await rig.state("B1")
    assert state.state is Phase.SCHEDULED, state.failure
    return state


async def in_state(rig: Rig, phase: Phase, code_id: str | None = None) -> bool:
    state = await rig.state("B1")
    return state.state is phase and (code_id is None or state.access_code_id != code_id)


async def test_lock_offline_after_scheduled_is_told_and_back(redis: Redis, redis_url: str) -> None:
    """A guarded code whose lock drops offline leaves `scheduled` (one log, one results entry
    with its errors) and comes back with another entry once the lock is back."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        feed = Feed(rig)
        await scheduled_stay(rig, feed)
        with capture_logs() as logs:
            rig.sandbox.take_offline("lock-1")
            await feed.deliver()  # device.disconnected wakes the lock's guarded stays
            await rig.run_until(lambda: in_state(rig, Phase.WAITING))
            rig.sandbox.bring_online("lock-1")
            await feed.deliver()
            await rig.run_until(lambda: in_state(rig, Phase.SCHEDULED))
        told = await results(redis)
        assert [e["state"] for e in told] == ["scheduled", "waiting_for_device", "scheduled"]
        assert told[1]["errors"] == "device_offline" and told[1]["reason"] == "errors"
        assert "code" not in told[1] and told[2]["reason"] == "recovered"
        n = counted(logs)
        assert n["access_code.unscheduled"] == 1 and n["access_code.error.added"] == 1
        assert n["access_code.error.cleared"] == 1 and n["access_code.scheduled"] == 1


async def test_code_deleted_outside_is_provisioned_again(redis: Redis, redis_url: str) -> None:
    """A guarded code deleted at the lock gets a new code: one code on the lock, the booking
    system told the code is gone and then the new code's PIN."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        feed = Feed(rig)
        first = await scheduled_stay(rig, feed)
        with capture_logs() as logs:
            assert first.access_code_id is not None
            rig.sandbox.delete_outside(first.access_code_id)
            await feed.deliver()
            await rig.run_until(lambda: in_state(rig, Phase.SCHEDULED, first.access_code_id))
        now = await rig.state("B1")
        on_lock = rig.sandbox.codes_on("lock-1")
        assert [c["access_code_id"] for c in on_lock] == [now.access_code_id]
        told = await results(redis)
        assert [e["state"] for e in told] == ["scheduled", "waiting_for_device", "scheduled"]
        assert told[1]["reason"] == told[2]["reason"] == "access_code_deleted"
        assert told[2]["code"] == on_lock[0]["code"]
        assert told[2]["access_code_id"] != first.access_code_id
        assert counted(logs)["access_code.deleted_outside"] == 1


async def test_pin_changed_at_the_keypad_is_told(redis: Redis, redis_url: str) -> None:
    """A PIN changed on the lock is logged once (masked) and told with the new PIN."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        feed = Feed(rig)
        first = await scheduled_stay(rig, feed)
        assert first.access_code_id is not None
        with capture_logs() as logs:
            rig.sandbox.change_pin_at_keypad(first.access_code_id, "918273")
            await feed.deliver()

            async def told_twice() -> bool:
                return len(await results(redis)) >= 2

            await rig.run_until(told_twice)
        told = await results(redis)
        assert told[1]["code"] == "918273" and told[1]["reason"] == "code_changed"
        changed = [e for e in logs if e["event"] == "access_code.code_changed"]
        assert len(changed) == 1 and "918273" not in str(changed[0])
        assert (await rig.state("B1")).code == "918273"


async def test_stay_is_over_at_its_end(redis: Redis, redis_url: str) -> None:
    """At ends_at a guarded stay's chain ends: `over` in status, no job left, logged once."""
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=datetime.now().astimezone().tzinfo)
    async with Rig(redis_url, ONE_LOCK) as rig:
        rig.sandbox = Sandbox(rig.scenario, seed=rig.seed, clock=SandboxClock(start=t0))
        stay = rig.stay("B1", days_ahead=0, nights=0) | {
            "starts_at": (t0 - timedelta(hours=1)).isoformat(),
            "ends_at": (t0 + timedelta(seconds=60)).isoformat(),
        }
        assert (await rig.enqueue(stay)).result == "enqueued"
        await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED and not state.public(rig.now)["over"]
        rig.sandbox.clock.advance(120)
        with capture_logs() as logs:
            await rig.make_due()
            await rig.run()
        state = await rig.state("B1")
        assert state.over and state.public(rig.now)["over"] and state.state is Phase.SCHEDULED
        queued = [j for j in await redis.zrange("codeprov:queue", 0, -1)
                  if j.startswith(b"codeprov:B1:")]  # the reconciler's cron may be queued too
        assert queued == []
        assert await redis.zscore("codeprov:stays", "B1") is None
        assert counted(logs)["stay.over"] == 1 and len(await results(redis)) == 1


async def test_scheduled_on_device_event_saves_the_get(redis: Redis, redis_url: str) -> None:
    """With events flowing, a code is seen scheduled from Seam's event: generate + create, no
    `get` at all, and the scheduled log written once."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        feed = Feed(rig)
        await redis.set(flowing_key("codeprov"), "1", ex=3600)
        assert (await rig.enqueue(rig.stay("B1"))).result == "enqueued"

        async def created() -> bool:
            return (await rig.state("B1")).access_code_id is not None

        await rig.run_until(created)
        waiting = await rig.state("B1")
        assert waiting.state is Phase.WAITING
        assert waiting.next_check_at is not None
        assert waiting.next_check_at >= rig.now + timedelta(seconds=rig.settings.safety_poll - 5)

        async def on_device() -> bool:
            return any(e["event_type"] == "access_code.scheduled_on_device"
                       for e in rig.sandbox.events())

        await rig.run_until(on_device)
        with capture_logs() as logs:
            await feed.deliver()
            await rig.run()
        assert (await rig.state("B1")).state is Phase.SCHEDULED
        assert gets(rig) == 0
        assert requests(rig, "/access_codes/generate_code") == requests(rig, CREATE) == 1
        n = counted(logs)  # the create's `creating` mutation is done once the code is scheduled
        assert n["access_code.scheduled"] == 1 and n["access_code.mutation.cleared"] == 1


async def waiting_with_events(rig: Rig, redis: Redis) -> StayState:
    """B1's code created with events flowing: its next look 15 minutes away."""
    await redis.set(flowing_key("codeprov"), "1", ex=3600)
    assert (await rig.enqueue(rig.stay("B1"))).result == "enqueued"

    async def created() -> bool:
        return (await rig.state("B1")).access_code_id is not None

    await rig.run_until(created)
    state = await rig.state("B1")
    assert state.programming_since is not None and state.access_code_id is not None
    return state


async def test_event_signal_with_another_event_needs_a_look(redis: Redis, redis_url: str) -> None:
    """The event says scheduled, but another event came with it: the woken step reads the code
    with a `get`."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        state = await waiting_with_events(rig, redis)
        assert state.programming_since is not None
        events = Events(rig.pool, "codeprov", rig.settings.queue_name)
        at = state.programming_since + timedelta(seconds=1)
        await events.take(synthetic("e1", "access_code.scheduled_on_device", state, at))
        await events.take(synthetic("e2", "access_code.delay_in_setting_on_device", state, at))
        await rig.run_until(lambda: _looked(rig))
        assert gets(rig) >= 1


@pytest.mark.parametrize("kind", ["access_code.scheduled_on_device", "access_code.changed"])
async def test_events_older_than_the_last_read_need_no_look(
    redis: Redis, redis_url: str, kind: str
) -> None:
    """Events that happened before the stay's last read (the create's answer here): the woken
    step calls Seam for nothing and the stay keeps waiting."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        state = await waiting_with_events(rig, redis)
        assert state.programming_since is not None
        at = state.programming_since - timedelta(seconds=30)
        await Events(rig.pool, "codeprov", rig.settings.queue_name).take(
            synthetic("e1", kind, state, at))

        async def stepped() -> bool:
            return (await rig.state("B1")).seq > state.seq

        before = rig.sandbox.stats()["requests_total"]
        await rig.run_until(stepped)
        assert rig.sandbox.stats()["requests_total"] == before
        assert (await rig.state("B1")).state is Phase.WAITING


async def _looked(rig: Rig) -> bool:
    return gets(rig) >= 1


def synthetic(event_id: str, kind: str, state: StayState, at: datetime) -> SeamEvent:
    return SeamEvent(event_id=event_id, event_type=kind, access_code_id=state.access_code_id,
                     device_id=state.stay.device_id, occurred_at=at.isoformat())


@pytest.mark.parametrize("flowing", [False, True])
async def test_guard_looks_sparse_and_before_arrival(
    redis: Redis, redis_url: str, flowing: bool
) -> None:
    """A scheduled code's next look: `guard_poll` without events; with events flowing the
    confirming look at_risk_margin before starts_at (sooner than `guard_safety_poll`)."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        assert (await rig.enqueue(rig.stay("B1", days_ahead=2))).result == "enqueued"
        await rig.run()
        if flowing:
            await redis.set(flowing_key("codeprov"), "1", ex=3600)
        await rig.make_due()  # one guard look now
        await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED and state.next_check_at is not None
        assert state.stay.starts_at is not None
        ahead = (state.next_check_at - state.updated_at).total_seconds()
        if flowing:
            confirm = state.stay.starts_at - timedelta(seconds=rig.settings.at_risk_margin)
            assert abs((state.next_check_at - confirm).total_seconds()) < 1
        else:
            assert rig.settings.guard_poll <= ahead <= rig.settings.guard_poll * 1.05


async def test_confirming_look_before_arrival(redis: Redis, redis_url: str) -> None:
    """At at_risk_margin before starts_at a guarded code is read once more and stays scheduled."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        assert (await rig.enqueue(rig.stay("B1", days_ahead=2))).result == "enqueued"
        await rig.run()
        await redis.set(flowing_key("codeprov"), "1", ex=3600)
        await rig.make_due()  # a guard look with events flowing: next, the confirming look
        await rig.run()
        state = await rig.state("B1")
        assert state.state is Phase.SCHEDULED and state.next_check_at is not None
        before = gets(rig)
        rig.sandbox.clock.advance((state.next_check_at - rig.now).total_seconds() + 1)
        await rig.make_due()
        await rig.run()
        after = await rig.state("B1")
        assert gets(rig) == before + 1 and after.state is Phase.SCHEDULED
        assert after.next_check_at is not None and after.stay.ends_at is not None
        assert after.next_check_at <= after.stay.ends_at
        assert len(await results(redis)) == 1


async def test_webhooks_slow_the_feed_to_catch_up(redis: Redis, redis_url: str) -> None:
    """A verified webhook marks events flowing and webhooks seen; the feed then polls only
    every webhook_interval. A feed poll alone marks events flowing, not webhooks seen."""
    async with Rig(redis_url, ONE_LOCK) as rig:
        seam = SeamClient(rig.settings.seam_endpoint, rig.sandbox.api_key,
                          limiter=shared_limiter(rig.pool, rig.settings), transport=rig.transport())
        events = Events(rig.pool, "codeprov", rig.settings.queue_name, alive=600)
        feed = EventsFeed(rig.pool, seam, events, "w", rig.sandbox.clock.now, interval=30,
                          webhook_interval=900)
        try:
            assert await feed.next_interval() == 30
            await feed.poll()
            assert await redis.exists(flowing_key("codeprov")) == 1
            assert await redis.exists(webhooks_key("codeprov")) == 0
            assert await feed.next_interval() == 30
            await Events(rig.pool, "codeprov", "q", alive=600).note_alive(webhook=True)
            assert 0 < await redis.ttl(webhooks_key("codeprov")) <= 600
            assert await feed.next_interval() == 900
        finally:
            await seam.aclose()
