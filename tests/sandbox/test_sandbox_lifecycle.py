"""A code's life on the sandbox clock: creating, deferral, scheduled, set, updates, removal."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sandbox_helpers import LOCK, T0, MakeClient, at, code_of, create, frozen_sandbox, mutations

from seam_sandbox import DeviceSpec, Latency, Sandbox, Scenario

pytestmark = pytest.mark.anyio

HOUR = 3600.0


async def test_new_code_is_being_created(client: httpx.AsyncClient) -> None:
    """A new code is `setting`, not scheduled, with a `creating` mutation."""
    code = (await create(client)).json()["access_code"]
    assert code["status"] == "setting"
    assert code["is_scheduled_on_device"] is False
    assert mutations(code) == ["creating"]
    assert code["pending_mutations"][0]["created_at"] == at(0)


async def test_code_is_scheduled_after_the_latency(sb: Sandbox, client: httpx.AsyncClient) -> None:
    """After the device latency the code is scheduled, mutation-free and (ongoing) `set`."""
    created = (await create(client)).json()["access_code"]
    sb.clock.advance(9.9)
    assert (await code_of(client, created["access_code_id"]))["is_scheduled_on_device"] is False
    sb.clock.advance(0.1)
    code = await code_of(client, created["access_code_id"])
    assert code["is_scheduled_on_device"] is True
    assert code["pending_mutations"] == [] and code["status"] == "set"
    assert sb.mark_scheduled_at(created["access_code_id"]) == T0 + timedelta(seconds=10)


async def test_far_future_code_is_deferred(sb: Sandbox, client: httpx.AsyncClient) -> None:
    """A stay starting beyond 72 h is `unset` with deferring_creation at starts_at - 72 h."""
    code = (await create(client, starts_at=at(100 * HOUR), ends_at=at(110 * HOUR))).json()
    pending = code["access_code"]["pending_mutations"]
    assert code["access_code"]["status"] == "unset"
    assert [m["mutation_code"] for m in pending] == ["deferring_creation"]
    assert pending[0]["scheduled_at"] == at(28 * HOUR)


async def test_deferred_code_is_created_at_scheduled_at(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """At scheduled_at a deferred code starts `creating`, and is scheduled one latency later."""
    created = (await create(client, starts_at=at(100 * HOUR), ends_at=at(110 * HOUR))).json()
    access_code_id = created["access_code"]["access_code_id"]
    sb.clock.advance(28 * HOUR)
    code = await code_of(client, access_code_id)
    assert mutations(code) == ["creating"] and code["status"] == "setting"
    sb.clock.advance(10)
    code = await code_of(client, access_code_id)
    assert code["is_scheduled_on_device"] is True and code["status"] == "unset"


async def test_time_bound_code_is_set_from_starts_at(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """A scheduled time-bound code is `unset` before starts_at and `set` from it."""
    created = (await create(client, starts_at=at(HOUR), ends_at=at(2 * HOUR))).json()
    access_code_id = created["access_code"]["access_code_id"]
    sb.clock.advance(30)
    assert (await code_of(client, access_code_id))["status"] == "unset"
    sb.clock.advance(HOUR)
    assert (await code_of(client, access_code_id))["status"] == "set"


async def test_code_is_removed_after_ends_at(sb: Sandbox, client: httpx.AsyncClient) -> None:
    """After ends_at the code is gone: get is 404 and list omits it."""
    created = (await create(client, starts_at=at(60), ends_at=at(600))).json()
    access_code_id = created["access_code"]["access_code_id"]
    sb.clock.advance(600)
    response = await client.post("/access_codes/get", json={"access_code_id": access_code_id})
    listed = await client.post("/access_codes/list", json={"device_id": LOCK})
    assert response.status_code == 404
    assert listed.json()["access_codes"] == []
    assert sb.mark_scheduled_at(access_code_id) == T0 + timedelta(seconds=10)


async def test_update_time_frame_adds_a_mutation_that_clears(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """update of the time frame adds updating_time_frame until one latency has passed."""
    created = (await create(client, starts_at=at(60), ends_at=at(600))).json()
    access_code_id = created["access_code"]["access_code_id"]
    sb.clock.advance(20)
    body = {"access_code_id": access_code_id, "ends_at": at(1200)}
    response = await client.post("/access_codes/update", json=body)
    assert response.json()["ok"] is True
    code = await code_of(client, access_code_id)
    assert mutations(code) == ["updating_time_frame"]
    assert code["ends_at"] == at(1200)
    sb.clock.advance(10)
    assert (await code_of(client, access_code_id))["pending_mutations"] == []


async def test_update_name_and_code(sb: Sandbox, client: httpx.AsyncClient) -> None:
    """update of name and code adds updating_name and updating_code mutations."""
    access_code_id = (await create(client, code="1234")).json()["access_code"]["access_code_id"]
    sb.clock.advance(10)
    body = {"access_code_id": access_code_id, "name": "New", "code": "5678"}
    await client.post("/access_codes/update", json=body)
    code = await code_of(client, access_code_id)
    assert sorted(mutations(code)) == ["updating_code", "updating_name"]
    assert code["name"] == "New" and code["code"] == "5678"


async def test_update_to_a_taken_pin_is_duplicate(client: httpx.AsyncClient) -> None:
    """update to a PIN live on the device is 409 duplicate_access_code."""
    await create(client, code="1234")
    access_code_id = (await create(client, code="9999")).json()["access_code"]["access_code_id"]
    body = {"access_code_id": access_code_id, "code": "1234"}
    response = await client.post("/access_codes/update", json=body)
    assert response.status_code == 409


async def test_update_of_a_deferred_code_moves_its_scheduling(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """Moving a deferred stay moves deferring_creation's scheduled_at."""
    created = (await create(client, starts_at=at(100 * HOUR), ends_at=at(110 * HOUR))).json()
    access_code_id = created["access_code"]["access_code_id"]
    body = {
        "access_code_id": access_code_id,
        "starts_at": at(200 * HOUR),
        "ends_at": at(210 * HOUR),
    }
    await client.post("/access_codes/update", json=body)
    deferring = (await code_of(client, access_code_id))["pending_mutations"][0]
    assert deferring["scheduled_at"] == at(128 * HOUR)


async def test_delete_removes_the_code_after_the_latency(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """delete answers ok at once, shows `removing` + deleting, and the code 404s later."""
    access_code_id = (await create(client)).json()["access_code"]["access_code_id"]
    sb.clock.advance(10)
    response = await client.post("/access_codes/delete", json={"access_code_id": access_code_id})
    assert response.json()["ok"] is True
    code = await code_of(client, access_code_id)
    assert code["status"] == "removing" and mutations(code) == ["deleting"]
    sb.clock.advance(10)
    gone = await client.post("/access_codes/get", json={"access_code_id": access_code_id})
    assert gone.status_code == 404


async def test_just_in_time_scheduling_uses_a_one_hour_lead(client: httpx.AsyncClient) -> None:
    """prefer_native_scheduling=false defers programming to one hour before starts_at."""
    body = {"starts_at": at(10 * HOUR), "ends_at": at(20 * HOUR), "prefer_native_scheduling": False}
    code = (await create(client, **body)).json()["access_code"]
    assert code["pending_mutations"][0]["scheduled_at"] == at(9 * HOUR)


async def test_latency_draws_stay_within_the_distribution(make_client: MakeClient) -> None:
    """Uniform latencies fall within [low, high] and differ between codes."""
    spec = DeviceSpec(id=LOCK, latency=Latency.uniform(5, 50))
    sandbox = frozen_sandbox(Scenario(devices=[spec]))
    client = make_client(sandbox)
    ids = [(await create(client)).json()["access_code"]["access_code_id"] for _ in range(5)]
    delays = [(sandbox.mark_scheduled_at(i) - T0).total_seconds() for i in ids]  # type: ignore[operator]
    assert all(5 <= d <= 50 for d in delays)
    assert len(set(delays)) == 5


async def test_codes_on_lists_live_codes_as_rendered(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """codes_on returns the device's live codes as the API renders them."""
    created = (await create(client, code="1234")).json()["access_code"]
    assert sb.codes_on(LOCK) == [created]
