"""A create whose answer never came back: the stay adopts its own code, never a second or another.

Real Redis, real arq workers, the sandbox over ASGITransport. The only thing between them is a
transport that, on the sandbox's answer to a create, either does something first (a change of
the stay committed while the create is in flight) or raises as a worker that died right after
the POST would: the step ends without recording the answer and arq runs it again.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from harness import Rig
from redis.asyncio import Redis

from jobs.enqueue import cancel_stay
from jobs.state import Phase
from seam_sandbox import DeviceSpec, Drop, Latency, RateLimits, Scenario

pytestmark = pytest.mark.anyio

CREATE = "/access_codes/create"
Hook = Callable[[httpx.Request], Awaitable[None]]


class WorkerDied(RuntimeError):
    """Raised where the worker would have died: after the POST, before its answer is read."""


class Hooked(httpx.AsyncBaseTransport):
    """Forwards to the sandbox; runs `before` / `after` around the first `route` request."""

    def __init__(self, inner: httpx.AsyncBaseTransport, rig: HookedRig) -> None:
        self.inner, self.rig = inner, rig

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        first = request.url.path == self.rig.route and not self.rig.fired
        if first:
            self.rig.fired = True
            if self.rig.before is not None:
                await self.rig.before(request)
        response = await self.inner.handle_async_request(request)
        if first and self.rig.after is not None:
            await response.aread()  # the create took effect; its answer is what goes missing
            await self.rig.after(request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class HookedRig(Rig):
    route: str = CREATE
    before: Hook | None = None
    after: Hook | None = None
    fired: bool = field(default=False, init=False)

    def transport(self) -> httpx.AsyncBaseTransport:
        return Hooked(super().transport(), self)


async def die(request: httpx.Request) -> None:
    raise WorkerDied("the worker died after sending the create")


def one_lock(page_size: int = 500) -> Scenario:
    """One lock that programs codes at once: an adopted code is scheduled when it is adopted."""
    return Scenario(devices=[DeviceSpec(id="lock-1", latency=Latency.fixed(0))],
                    list_page_size=page_size, rate_limits=RateLimits(per_device=False))


async def add_codes(rig: Rig, n: int, *, pins: list[str] | None = None) -> list[str]:
    """`n` codes of other guests on lock-1 (names `Guest i`), created straight on the sandbox."""
    pins = pins or [str(700_000 + i) for i in range(n)]
    ids = []
    async with httpx.AsyncClient(
        transport=Rig.transport(rig),
        base_url="http://sandbox",
        headers={"Authorization": f"Bearer {rig.sandbox.api_key}"},
    ) as http:
        for i in range(n):
            body = {"device_id": "lock-1", "code": pins[i], "name": f"Guest {i}"}
            try:
                answer = await http.post(CREATE, json=body)
            except ConnectionResetError:  # a scenario's drop after the create took effect
                [lost] = named(rig, f"Guest {i}")
                ids.append(lost["access_code_id"])
                continue
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["access_code"]["access_code_id"])
    return ids


def creates(rig: Rig) -> dict[str, int]:
    return dict(rig.sandbox.stats()["requests"].get(CREATE, {}))


def named(rig: Rig, name: str) -> list[dict[str, Any]]:
    return [c for c in rig.sandbox.codes_on("lock-1") if c["name"] == name]


def window(code: dict[str, Any]) -> tuple[datetime, datetime]:
    """A code's window as the sandbox shows it (to the millisecond)."""
    parse = datetime.fromisoformat
    return parse(code["starts_at"]), parse(code["ends_at"])


def to_ms(*moments: datetime) -> tuple[datetime, ...]:
    return tuple(m.replace(microsecond=m.microsecond // 1000 * 1000) for m in moments)


async def test_update_during_create_is_sent_before_scheduled(redis: Redis, redis_url: str) -> None:
    """An update committed while the create is in flight: the lock's code gets the new window
    by /access_codes/update, and the stay is scheduled with that window."""
    rig = HookedRig(redis_url, one_lock())
    moved: dict[str, Any] = {}

    async def update_meanwhile(request: httpx.Request) -> None:
        moved.update(rig.stay("B1", days_ahead=5, revision=2, action="update"))
        assert (await rig.enqueue(moved)).result == "enqueued"

    rig.before = update_meanwhile
    async with rig:
        await rig.enqueue(rig.stay("B1", revision=1))
        await rig.run()
        state = await rig.state("B1")
        [code] = rig.sandbox.codes_on("lock-1")
        stats = rig.sandbox.stats()["requests"]
    new = (datetime.fromisoformat(moved["starts_at"]), datetime.fromisoformat(moved["ends_at"]))
    assert state.state is Phase.SCHEDULED and state.access_code_id == code["access_code_id"]
    assert (state.stay.starts_at, state.stay.ends_at) == new
    assert state.applied is not None and (state.applied.starts_at, state.applied.ends_at) == new
    assert window(code) == to_ms(*new)
    assert stats["/access_codes/update"] == {"200": 1}
    assert stats[CREATE] == {"200": 1}


async def test_generated_full_code_gets_the_stays_window(redis: Redis, redis_url: str) -> None:
    """generate_code answering a full access code (no window, no name): an update gives it the
    stay's window and name before the stay is scheduled."""
    scenario = one_lock().model_copy(update={"generate_code_shape": "access_code"})
    async with Rig(redis_url, scenario) as rig:
        stay = rig.stay("B1")
        await rig.enqueue(stay)
        await rig.run()
        state = await rig.state("B1")
        [code] = rig.sandbox.codes_on("lock-1")
        stats = rig.sandbox.stats()["requests"]
    assert state.state is Phase.SCHEDULED and state.access_code_id == code["access_code_id"]
    wanted = (datetime.fromisoformat(stay["starts_at"]), datetime.fromisoformat(stay["ends_at"]))
    assert window(code) == to_ms(*wanted) and code["name"] == "Stay B1"
    assert stats["/access_codes/update"] == {"200": 1}


async def test_cancel_while_generate_code_makes_a_code_leaves_none(
    redis: Redis, redis_url: str
) -> None:
    """A cancel committed while generate_code (answering a full code) is out: the code it made
    is deleted, the stay ends cancelled and the lock holds nothing."""
    scenario = one_lock().model_copy(update={"generate_code_shape": "access_code"})

    async def cancel_meanwhile(request: httpx.Request) -> None:
        assert (await cancel_stay(rig.pool, "B1", now=rig.now)).result == "enqueued"

    async with HookedRig(redis_url, scenario, route="/access_codes/generate_code",
                         after=cancel_meanwhile) as rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        state = await rig.state("B1")
    assert state.state is Phase.CANCELLED
    assert rig.sandbox.codes_on("lock-1") == []


async def test_worker_dying_after_the_post_leaves_one_code(redis: Redis, redis_url: str) -> None:
    """The worker dies right after a create reached Seam: the re-run finds the code the
    recorded intent points at, and the lock ends with exactly that one code."""
    rig = HookedRig(redis_url, one_lock(), after=die)
    async with rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        state = await rig.state("B1")
        codes = rig.sandbox.codes_on("lock-1")
    assert state.state is Phase.SCHEDULED
    assert [(c["access_code_id"], c["name"], c["code"]) for c in codes] == [
        (state.access_code_id, "Stay B1", state.code)
    ]
    assert creates(rig) == {"200": 1}


async def test_lost_create_on_a_paged_lock_is_adopted_by_its_pin(
    redis: Redis, redis_url: str
) -> None:
    """Twelve other codes on a lock that lists five a page: the stay's code, created last and
    its answer lost, is adopted on the re-run by its PIN (a get, no list); no second code."""
    rig = HookedRig(redis_url, one_lock(page_size=5), after=die)
    async with rig:
        others = await add_codes(rig, 12)
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        state = await rig.state("B1")
        [own] = named(rig, "Stay B1")
        left = [c["access_code_id"] for c in rig.sandbox.codes_on("lock-1")]
    assert state.state is Phase.SCHEDULED
    assert (state.access_code_id, state.code) == (own["access_code_id"], own["code"])
    assert left == [*others, own["access_code_id"]]
    assert creates(rig) == {"200": 13}
    assert "/access_codes/list" not in rig.sandbox.stats()["requests"]


async def test_cancel_finds_an_unrecorded_code_past_page_one(redis: Redis, redis_url: str) -> None:
    """A cancel lands while a worker that died after its create is down: the unrecorded code,
    past the first page of the lock's codes, is found by name and deleted; no other code is."""
    rig = HookedRig(redis_url, one_lock(page_size=5))

    async def cancel_then_die(request: httpx.Request) -> None:
        assert (await cancel_stay(rig.pool, "B1")).result == "enqueued"
        await die(request)

    rig.after = cancel_then_die
    async with rig:
        others = await add_codes(rig, 12)
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        state = await rig.state("B1")
        rig.sandbox.clock.advance(60)  # the delete goes through
        left = [c["access_code_id"] for c in rig.sandbox.codes_on("lock-1")]
        deletes = rig.sandbox.stats()["requests"]["/access_codes/delete"]
    assert state.state is Phase.CANCELLED
    assert left == others
    assert deletes == {"200": 1}


async def test_re_run_never_adopts_another_code_with_its_pin(redis: Redis, redis_url: str) -> None:
    """The stay's PIN is taken by another guest's code just before the create, and the worker
    dies after the 409: the re-run does not adopt that code, it gets a new PIN and its own."""
    rig = HookedRig(redis_url, one_lock())

    async def take_the_pin(request: httpx.Request) -> None:
        await add_codes(rig, 1, pins=[json.loads(request.content)["code"]])

    rig.before, rig.after = take_the_pin, die
    async with rig:
        await rig.enqueue(rig.stay("B1"))
        await rig.run()
        state = await rig.state("B1")
        [guest] = named(rig, "Guest 0")
        [own] = named(rig, "Stay B1")
    assert state.state is Phase.SCHEDULED
    assert (state.access_code_id, state.code) == (own["access_code_id"], own["code"])
    assert own["code"] != guest["code"]
    assert state.pin_conflicts == 1


async def test_each_stay_ends_with_its_own_code(redis: Redis, redis_url: str) -> None:
    """Eight stays on a lock holding other guests' codes, every second create's answer lost:
    each stay is scheduled with the one code named for it, its PIN the one its record holds."""
    scenario = one_lock(page_size=5).model_copy(
        update={"drops": [Drop(every_nth=2, routes=[CREATE], when="after")]}
    )
    async with Rig(redis_url, scenario) as rig:
        others = await add_codes(rig, 3)  # drops count these creates too: every 2nd is lost
        for i in range(8):
            await rig.enqueue(rig.stay(f"B{i}"))
        await rig.run(workers=2)
        states = {i: await rig.state(f"B{i}") for i in range(8)}
        codes = {c["access_code_id"]: c for c in rig.sandbox.codes_on("lock-1")}
        dropped = rig.sandbox.stats()["connections_dropped"]
    assert dropped >= 4
    assert len(codes) == 3 + 8 and set(others) <= set(codes)
    for i, state in states.items():
        assert state.state is Phase.SCHEDULED, (i, state.failure)
        own = codes[state.access_code_id or ""]
        assert (own["name"], own["code"]) == (f"Stay B{i}", state.code)
