"""`/events/list` (since/between, filters, limit, unstable_offset) and `/events/get`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_helpers import LOCK, MakeClient, at, create, frozen_sandbox

from seam_sandbox import DeviceSpec, Latency, Sandbox, Scenario

pytestmark = pytest.mark.anyio


@pytest.fixture
def sb() -> Sandbox:
    devices = [DeviceSpec(id=d, latency=Latency.fixed(10)) for d in (LOCK, "lock-2")]
    return frozen_sandbox(Scenario(devices=devices))


async def seeded(sb: Sandbox, client: httpx.AsyncClient) -> list[str]:
    """Two codes on lock-1 and one on lock-2, all scheduled and set: 9 events."""
    ids = []
    for device_id in (LOCK, LOCK, "lock-2"):
        body = (await create(client, device_id=device_id)).json()
        ids.append(body["access_code"]["access_code_id"])
        sb.clock.advance(1)
    sb.clock.advance(60)
    return ids


async def listed(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    response = await client.post("/events/list", json=body)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


async def test_since_is_required(client: httpx.AsyncClient) -> None:
    """/events/list without since or between is 400 invalid_input naming since."""
    response = await client.post("/events/list", json={})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_input"
    assert "since" in response.json()["error"]["validation_errors"]


async def test_since_and_between_bound_occurred_at(sb: Sandbox, client: httpx.AsyncClient) -> None:
    """since keeps events at or after it; between keeps those strictly inside."""
    await seeded(sb, client)
    since = await listed(client, since=at(1))
    assert since[0]["occurred_at"] == at(1) and len(since) == 8  # only the first create is at 0
    inside = await listed(client, between=[at(0), at(2)])
    assert [e["occurred_at"] for e in inside] == [at(1)]


async def test_filters_select_types_codes_and_devices(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """event_type(s), access_code_id(s) and device_id(s) filter; sorted by occurred_at."""
    ids = await seeded(sb, client)
    everything = await listed(client, since=at(0))
    assert len(everything) == 9
    assert [e["occurred_at"] for e in everything] == sorted(e["occurred_at"] for e in everything)
    created = await listed(client, since=at(0), event_type="access_code.created")
    assert [e["access_code_id"] for e in created] == ids
    two = ["access_code.created", "access_code.set_on_device"]
    assert len(await listed(client, since=at(0), event_types=two)) == 6
    one = await listed(client, since=at(0), access_code_id=ids[1])
    assert {e["access_code_id"] for e in one} == {ids[1]} and len(one) == 3
    assert len(await listed(client, since=at(0), access_code_ids=ids[:2])) == 6
    assert {e["device_id"] for e in await listed(client, since=at(0), device_id="lock-2")} == {
        "lock-2"
    }
    assert len(await listed(client, since=at(0), device_ids=[LOCK, "lock-2"])) == 9


async def test_limit_and_unstable_offset_page(sb: Sandbox, client: httpx.AsyncClient) -> None:
    """limit and unstable_offset page through the list without gaps or repeats."""
    await seeded(sb, client)
    everything = await listed(client, since=at(0))
    pages = [await listed(client, since=at(0), limit=4, unstable_offset=o) for o in (0, 4, 8)]
    assert [len(p) for p in pages] == [4, 4, 1]
    assert [e for p in pages for e in p] == everything


async def test_get_query_and_events_get(sb: Sandbox, client: httpx.AsyncClient) -> None:
    """GET /events/list takes query parameters; /events/get finds an event, 404 otherwise."""
    ids = await seeded(sb, client)
    query = {"since": at(0), "access_code_ids": ",".join(ids[:1])}
    response = await client.get("/events/list", params=query)
    assert len(response.json()["events"]) == 3
    event = response.json()["events"][0]
    got = await client.post("/events/get", json={"event_id": event["event_id"]})
    assert got.json()["event"] == event
    missing = await client.post("/events/get", json={"event_id": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "event_not_found"


async def test_events_need_the_api_key(sb: Sandbox, make_client: MakeClient) -> None:
    """/events/list without the API key is 401."""
    response = await make_client(sb, key="").post("/events/list", json={"since": at(0)})
    assert response.status_code == 401
