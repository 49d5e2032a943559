"""Seam events from the sandbox: one per transition, at its sandbox time, and `/events/*`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_helpers import LOCK, MakeClient, at, create, frozen_sandbox

from seam_sandbox import DeviceSpec, Fault, Latency, Sandbox, Scenario

pytestmark = pytest.mark.anyio

HOUR = 3600.0
SINCE = at(0)


async def events(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    response = await client.post("/events/list", json={"since": SINCE} | body)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def timeline(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["event_type"], e["occurred_at"]) for e in found]


def faulty(*faults: Fault) -> Sandbox:
    return frozen_sandbox(
        Scenario(devices=[DeviceSpec(id=LOCK, latency=Latency.fixed(10), faults=list(faults))])
    )


async def test_code_life_emits_each_event_once_in_order(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """A deferred stay's code emits created, scheduled_on_device, set_on_device,
    removed_from_device, deleted once each, at their sandbox times, however often listed."""
    body = (await create(client, starts_at=at(100 * HOUR), ends_at=at(110 * HOUR))).json()
    for step in (HOUR, 27 * HOUR, 10, 72 * HOUR, 10 * HOUR):
        sb.clock.advance(step)
        await events(client)
    found = await events(client)
    assert timeline(found) == [
        ("access_code.created", at(0)),
        ("access_code.scheduled_on_device", at(28 * HOUR + 10)),
        ("access_code.set_on_device", at(100 * HOUR)),
        ("access_code.removed_from_device", at(110 * HOUR)),
        ("access_code.deleted", at(110 * HOUR)),
    ]
    code = body["access_code"]
    assert {e["access_code_id"] for e in found} == {code["access_code_id"]}
    assert [e["code"] for e in found if "code" in e] == [code["code"]] * 3
    assert len({e["event_id"] for e in found}) == 5
    assert all(e["created_at"] == e["occurred_at"] for e in found)


async def test_update_emits_changed_and_what_changed(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """An update of name and time frame emits changed (changed_properties), name_changed and
    time_frame_changed with from/to, at the update's time."""
    code = (await create(client, name="a", starts_at=at(HOUR), ends_at=at(2 * HOUR))).json()
    access_code_id = code["access_code"]["access_code_id"]
    sb.clock.advance(60)
    update = {"access_code_id": access_code_id, "name": "b", "ends_at": at(3 * HOUR)}
    assert (await client.post("/access_codes/update", json=update)).status_code == 200
    found = [e for e in await events(client) if e["occurred_at"] == at(60)]
    assert [e["event_type"] for e in found] == [
        "access_code.changed",
        "access_code.name_changed",
        "access_code.time_frame_changed",
    ]
    assert found[0]["changed_properties"] == [
        {"property": "name", "from": "a", "to": "b"},
        {"property": "ends_at", "from": at(2 * HOUR), "to": at(3 * HOUR)},
    ]
    assert found[1]["from"] == {"name": "a"} and found[1]["to"] == {"name": "b"}
    assert found[2]["to"] == {"starts_at": at(HOUR), "ends_at": at(3 * HOUR)}


async def test_delete_emits_removed_then_deleted_after_latency(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """Deleting a scheduled code emits removed_from_device and deleted one latency later."""
    access_code_id = (await create(client)).json()["access_code"]["access_code_id"]
    sb.clock.advance(20)
    await client.post("/access_codes/delete", json={"access_code_id": access_code_id})
    sb.clock.advance(10)
    assert timeline(await events(client))[-2:] == [
        ("access_code.removed_from_device", at(30)),
        ("access_code.deleted", at(30)),
    ]


async def test_programming_faults_emit_events_with_errors(make_client: MakeClient) -> None:
    """failed_to_set_on_device and delay_in_setting_on_device fire when the fault starts
    holding up a code, with the code's errors and warnings."""
    sb = faulty(
        Fault(kind="failed_to_set_on_device", start=5, duration=30),
        Fault(kind="delay_in_setting_on_device", start=38, duration=30),
    )
    client = make_client(sb)
    await create(client)
    sb.clock.advance(100)
    found = await events(client)
    assert timeline(found) == [
        ("access_code.created", at(0)),
        ("access_code.failed_to_set_on_device", at(5)),
        ("access_code.delay_in_setting_on_device", at(38)),
        ("access_code.scheduled_on_device", at(70)),
        ("access_code.set_on_device", at(70)),
    ]
    assert [e["error_code"] for e in found[1]["access_code_errors"]] == ["failed_to_set_on_device"]
    assert [w["warning_code"] for w in found[2]["access_code_warnings"]] == [
        "delay_in_setting_on_device"
    ]
    assert found[1]["device_errors"] == [] and found[1]["connected_account_errors"] == []


async def test_terminal_error_emits_failed_to_set_once(make_client: MakeClient) -> None:
    """A code hit by a terminal fault emits failed_to_set_on_device once, after its latency."""
    sb = faulty(Fault(kind="no_space_for_access_code_on_device"))
    client = make_client(sb)
    await create(client)
    sb.clock.advance(10)
    await events(client)
    sb.clock.advance(HOUR)
    found = await events(client)
    assert timeline(found) == [
        ("access_code.created", at(0)),
        ("access_code.failed_to_set_on_device", at(10)),
    ]
    errors = found[1]["access_code_errors"]
    assert [e["error_code"] for e in errors] == ["no_space_for_access_code_on_device"]


async def test_scenario_offline_window_emits_device_events(make_client: MakeClient) -> None:
    """A device_offline fault emits device.disconnected at its start and device.connected at
    its end."""
    sb = faulty(Fault(kind="device_offline", start=30, duration=60, error_code="hub_disconnected"))
    client = make_client(sb)
    sb.clock.advance(200)
    found = await events(client)
    assert timeline(found) == [("device.disconnected", at(30)), ("device.connected", at(90))]
    assert found[0]["error_code"] == "hub_disconnected" and found[0]["device_id"] == LOCK


async def test_changes_outside_codeprov_emit_seams_events(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """The keypad PIN change, the lock going offline and back, and a delete at the lock emit
    modified_external_to_seam/changed/code_changed, device.disconnected/connected and
    deleted_external_to_seam; the deleted code is then 404."""
    access_code_id = (await create(client, code="1234")).json()["access_code"]["access_code_id"]
    sb.clock.advance(20)
    sb.change_pin_at_keypad(access_code_id, "9876")
    sb.take_offline(LOCK)
    devices = (await client.post("/devices/get", json={"device_id": LOCK})).json()
    assert devices["device"]["properties"]["online"] is False
    sb.clock.advance(5)
    sb.bring_online(LOCK)
    sb.delete_outside(access_code_id)
    found = await events(client, since=at(20))
    assert [e["event_type"] for e in found] == [
        "access_code.modified_external_to_seam",
        "access_code.changed",
        "access_code.code_changed",
        "device.disconnected",
        "device.connected",
        "access_code.deleted_external_to_seam",
    ]
    assert found[2]["from"] == {"code": "1234"} and found[2]["to"] == {"code": "9876"}
    assert found[3]["error_code"] == "device_disconnected"
    response = await client.post("/access_codes/get", json={"access_code_id": access_code_id})
    assert response.status_code == 404


async def test_events_are_the_same_for_the_same_seed(make_client: MakeClient) -> None:
    """Two sandboxes with one seed given the same writes emit identical events (ids too)."""
    runs = []
    for _ in range(2):
        sb = frozen_sandbox(seed=7)
        client = make_client(sb)
        await create(client, starts_at=at(HOUR), ends_at=at(2 * HOUR))
        sb.clock.advance(3 * HOUR)
        runs.append(await events(client))
    assert runs[0] == runs[1] and len(runs[0]) == 5
