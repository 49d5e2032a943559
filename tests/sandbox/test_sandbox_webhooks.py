"""`/webhooks/*` and delivery: Svix-signed POSTs to a real loopback receiver, retried on
Svix's schedule, and the delivery faults (dropped, duplicated, late, out of order, down)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from receiver import Receiver, serve, wait_for
from sandbox_helpers import LOCK, MakeClient, at, create, frozen_sandbox
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError

from seam_sandbox import DeviceSpec, Latency, Sandbox, Scenario
from seam_sandbox.scenario import WebhookFault

pytestmark = pytest.mark.anyio


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    got = Receiver()
    async with serve(got) as url:
        yield got, url


def with_faults(*faults: WebhookFault) -> Sandbox:
    devices = [DeviceSpec(id=LOCK, latency=Latency.fixed(10))]
    return frozen_sandbox(Scenario(devices=devices, webhook_faults=list(faults)))


async def register(client: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/webhooks/create", json={"url": url} | body)
    assert response.status_code == 200, response.text
    hook: dict[str, Any] = response.json()["webhook"]
    return hook


def verified(got: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every received body, each verified with svix first (it raises on a bad signature)."""
    bodies = []
    for request in got.received:
        SvixWebhook(secret).verify(request.body, request.headers)
        bodies.append(json.loads(request.body))
    return bodies


async def test_webhook_routes(client: httpx.AsyncClient) -> None:
    """create gives a whsec_ secret and default ["*"]; list/get/delete; 404 after delete."""
    hook = await register(client, "http://127.0.0.1:9/hook")
    assert hook["secret"].startswith("whsec_") and hook["event_types"] == ["*"]
    assert (await client.post("/webhooks/list")).json()["webhooks"] == [hook]
    got = await client.post("/webhooks/get", json={"webhook_id": hook["webhook_id"]})
    assert got.json()["webhook"] == hook
    await client.post("/webhooks/delete", json={"webhook_id": hook["webhook_id"]})
    gone = await client.post("/webhooks/get", json={"webhook_id": hook["webhook_id"]})
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "webhook_not_found"


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/hook", "http://example.com/hook", "ftp://127.0.0.1/"]
)
async def test_webhooks_only_to_loopback(client: httpx.AsyncClient, url: str) -> None:
    """A webhook URL that is not http(s) on loopback is 400 invalid_input."""
    response = await client.post("/webhooks/create", json={"url": url})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_input"


async def test_delivered_events_verify_with_svix(
    sb: Sandbox, client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    """Each event is POSTed once, Svix-signed (svix verifies it) and equal to /events/list's."""
    got, url = receiver
    hook = await register(client, url)
    await create(client)
    sb.clock.advance(10)
    assert await sb.deliver_once() == 3
    with pytest.raises(WebhookVerificationError):
        SvixWebhook("whsec_" + "A" * 32).verify(got.received[0].body, got.received[0].headers)
    bodies = verified(got, hook["secret"])
    listed = (await client.post("/events/list", json={"since": at(0)})).json()["events"]
    assert bodies == listed
    assert len({r.headers["svix-id"] for r in got.received}) == 3
    assert await sb.deliver_once() == 0


async def test_event_types_filter_delivery(
    sb: Sandbox, client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    """A webhook with event_types gets only those types."""
    got, url = receiver
    hook = await register(client, url, event_types=["access_code.set_on_device"])
    await create(client)
    sb.clock.advance(10)
    await sb.deliver_once()
    assert [e["event_type"] for e in verified(got, hook["secret"])] == ["access_code.set_on_device"]


async def test_retries_follow_svix_schedule(
    sb: Sandbox, client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    """An endpoint answering 503 three times is retried at 0, 5 s, 5 min, 30 min after the
    previous attempt, with one svix-id, then left alone once it answers 2xx."""
    got, url = receiver
    await register(client, url, event_types=["access_code.created"])
    got.statuses.extend([503, 503, 503])
    await create(client)
    for step in (0, 4.9, 0.1, 299.9, 0.1, 1800, 36000):
        sb.clock.advance(step)
        await sb.deliver_once()
    attempts = [(d["attempt"], d["at"], d["outcome"]) for d in sb.deliveries()]
    assert attempts == [(1, at(0), 503), (2, at(5), 503), (3, at(305), 503), (4, at(2105), 204)]
    assert len({r.headers["svix-id"] for r in got.received}) == 1


async def test_connection_refused_retries_until_given_up(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """An endpoint that is down is tried 8 times over the schedule, then given up."""
    await register(client, "http://127.0.0.1:9/nobody-listens", event_types=["access_code.created"])
    await create(client)
    for _ in range(10):
        await sb.deliver_once()
        sb.clock.advance(36000)
    outcomes = [d["outcome"] for d in sb.deliveries()]
    assert outcomes == ["connection_error"] * 8 + ["gave_up"]


async def test_dropped_events_are_never_delivered(
    make_client: MakeClient, receiver: tuple[Receiver, str]
) -> None:
    """dropped every 2nd event: events 2 and 4 never arrive, the others do."""
    sb = with_faults(WebhookFault(kind="dropped", every_nth=2))
    client, (got, url) = make_client(sb), receiver
    hook = await register(client, url)
    for _ in range(2):
        await create(client)
    sb.clock.advance(10)
    await sb.deliver_once()
    everything = [e["event_id"] for e in sb.events()]
    assert [e["event_id"] for e in verified(got, hook["secret"])] == everything[0::2]
    assert [d["outcome"] for d in sb.deliveries()].count("dropped") == len(everything) // 2


async def test_duplicated_events_arrive_twice_with_one_svix_id(
    make_client: MakeClient, receiver: tuple[Receiver, str]
) -> None:
    """duplicated: each event arrives twice, both copies with the same svix-id and body."""
    sb = with_faults(WebhookFault(kind="duplicated", event_types=["access_code.created"]))
    client, (got, url) = make_client(sb), receiver
    hook = await register(client, url)
    await create(client)
    await sb.deliver_once()
    assert len(verified(got, hook["secret"])) == 2
    assert got.received[0].headers["svix-id"] == got.received[1].headers["svix-id"]
    assert got.received[0].body == got.received[1].body


async def test_late_events_wait_their_delay(
    make_client: MakeClient, receiver: tuple[Receiver, str]
) -> None:
    """late by 30 s: nothing is sent before 30 sandbox seconds after the event."""
    sb = with_faults(WebhookFault(kind="late", delay=30))
    client, (got, url) = make_client(sb), receiver
    await register(client, url, event_types=["access_code.created"])
    await create(client)
    sb.clock.advance(29.9)
    assert await sb.deliver_once() == 0
    sb.clock.advance(0.1)
    assert await sb.deliver_once() == 1 and len(got.received) == 1


async def test_out_of_order_shuffles_a_window_deterministically(
    make_client: MakeClient, receiver: tuple[Receiver, str]
) -> None:
    """out_of_order window 3: the 3 events arrive, all of them, not in occurred order, and in
    the same order for the same seed."""
    orders = []
    for _ in range(2):
        sb = with_faults(WebhookFault(kind="out_of_order", window=3))
        client, (got, url) = make_client(sb), receiver
        got.received.clear()
        await register(client, url)
        await create(client)
        sb.clock.advance(10)
        await sb.deliver_once()
        occurred = [e["event_id"] for e in sb.events()]
        arrived = [json.loads(r.body)["event_id"] for r in got.received]
        assert sorted(arrived) == sorted(occurred) and arrived != occurred
        orders.append([occurred.index(a) for a in arrived])
    assert orders[0] == orders[1]


async def test_out_of_order_releases_a_short_run_after_hold(
    make_client: MakeClient, receiver: tuple[Receiver, str]
) -> None:
    """A run shorter than the window is held, then sent `hold` seconds after its first event."""
    sb = with_faults(WebhookFault(kind="out_of_order", window=5, hold=60))
    client, (got, url) = make_client(sb), receiver
    await register(client, url, event_types=["access_code.created"])
    await create(client)
    await sb.deliver_once()
    assert got.received == []
    sb.clock.advance(60)
    assert await sb.deliver_once() == 1


async def test_endpoint_down_window_runs_the_retries(
    make_client: MakeClient, receiver: tuple[Receiver, str]
) -> None:
    """endpoint_down for 100 s: the attempts at 0 and 5 s fail unsent, the one at 305 s lands."""
    sb = with_faults(WebhookFault(kind="endpoint_down", duration=100))
    client, (got, url) = make_client(sb), receiver
    await register(client, url, event_types=["access_code.created"])
    await create(client)
    for step in (0, 5, 300):
        sb.clock.advance(step)
        await sb.deliver_once()
    outcomes = [(d["at"], d["outcome"]) for d in sb.deliveries()]
    assert outcomes == [(at(0), "endpoint_down"), (at(5), "endpoint_down"), (at(305), 204)]
    assert len(got.received) == 1


async def test_background_delivery_sends_without_being_asked(
    receiver: tuple[Receiver, str], make_client: MakeClient
) -> None:
    """Inside `delivering()`, an event is POSTed by the background task on its own."""
    sb = frozen_sandbox()
    client, (got, url) = make_client(sb), receiver
    hook = await register(client, url, event_types=["access_code.created"])
    async with sb.delivering(interval=0.01):
        await create(client)
        await wait_for(got, 1)
    assert verified(got, hook["secret"])[0]["event_type"] == "access_code.created"
