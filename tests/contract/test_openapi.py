"""Every sandbox answer on the routes codeprov uses validates against Seam's OpenAPI spec.

The spec is npm `@seamapi/types` (see seam_spec.py). Each test drives the sandbox through
states a code or lock can be in and checks each 200 answer against its route's response
schema, and each event (listed, got, delivered) against the spec's event schemas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from seam_spec import SeamSpec
from spec_client import SpecClient

from seam_sandbox import DeviceSpec, Fault, Latency, Sandbox, SandboxClock, Scenario
from seam_sandbox.app import allowed_methods

pytestmark = pytest.mark.anyio
START = datetime(2030, 1, 1, tzinfo=UTC)
LATENCY = 5.0
LOCK, FLAKY, BROKEN = "lock-1", "lock-flaky", "lock-broken"
UNPAID, UNLINKED = "lock-unpaid", "lock-unlinked"
CODE_ROUTES = ("generate_code", "create", "get", "list", "update", "delete")


def _scenario(**extra: Any) -> Scenario:
    faults = [
        Fault(kind="device_offline", start=100, duration=50),
        Fault(kind="delay_in_setting_on_device", start=200, duration=50),
        Fault(kind="failed_to_set_on_device", start=300, duration=50),
    ]
    broken = [Fault(kind="no_space_for_access_code_on_device", start=0, duration=1e6)]
    unpaid = Fault(kind="terminal_error", error_code="subscription_required", duration=1e6)
    unlinked = Fault(kind="device_offline", error_code="account_disconnected", duration=1e6)
    devices = [
        DeviceSpec(id=LOCK, latency=Latency.fixed(LATENCY)),
        DeviceSpec(id=FLAKY, latency=Latency.fixed(LATENCY), faults=faults),
        DeviceSpec(id=BROKEN, latency=Latency.fixed(LATENCY), faults=broken),
        DeviceSpec(id=UNPAID, latency=Latency.fixed(LATENCY), faults=[unpaid]),
        DeviceSpec(id=UNLINKED, latency=Latency.fixed(LATENCY), faults=[unlinked]),
    ]
    return Scenario(devices=devices, list_page_size=2, **extra)


@pytest.fixture
async def spec_client(seam_spec: SeamSpec) -> AsyncIterator[SpecClient]:
    sandbox = Sandbox(_scenario(), seed=1, clock=SandboxClock(speed=0, start=START))
    client = SpecClient(sandbox, seam_spec)
    yield client
    await client.aclose()


def _at(hours: float) -> str:
    return (START + timedelta(hours=hours)).isoformat()


async def _code(client: SpecClient, device_id: str, starts: float, ends: float) -> str:
    made = await client.call(
        "/access_codes/create", device_id=device_id, starts_at=_at(starts), ends_at=_at(ends)
    )
    access_code_id: str = made["access_code"]["access_code_id"]
    return access_code_id


async def _read(client: SpecClient, access_code_id: str) -> dict[str, Any]:
    """get (POST and GET) and list (POST and GET) the code; the get answer."""
    got = await client.call("/access_codes/get", access_code_id=access_code_id)
    await client.call("/access_codes/get", "GET", access_code_id=access_code_id)
    device_id = got["access_code"]["device_id"]
    await client.call("/access_codes/list", device_id=device_id)
    await client.call("/access_codes/list", "GET", device_id=device_id)
    return got


async def test_a_codes_life_conforms(spec_client: SpecClient) -> None:
    """create, get, list, update and delete answer per spec in each state of a code's life."""
    client = spec_client
    deferred = await _code(client, LOCK, 100, 200)  # programmed 72 h before it starts
    assert (await _read(client, deferred))["access_code"]["status"] == "unset"
    soon = await _code(client, LOCK, 1, 5)
    assert (await _read(client, soon))["access_code"]["status"] == "setting"
    client.advance(2 * LATENCY)
    assert (await _read(client, soon))["access_code"]["is_scheduled_on_device"] is True
    await client.call("/access_codes/create", device_id=LOCK, name="ongoing", code="4321")
    for change in ({"name": "renamed"}, {"code": "98765"}, {"ends_at": _at(6)}):
        await client.call("/access_codes/update", access_code_id=soon, **change)
        mutation = (await _read(client, soon))["access_code"]["pending_mutations"][0]
        assert mutation["mutation_code"].startswith("updating_")
        client.advance(2 * LATENCY)
    client.advance(3600)
    assert (await _read(client, soon))["access_code"]["status"] == "set"
    await client.call("/access_codes/delete", access_code_id=soon)
    assert (await _read(client, soon))["access_code"]["status"] == "removing"
    more = await client.call("/access_codes/list", device_id=LOCK, limit=1)
    assert more["pagination"]["has_next_page"] is True


async def test_codes_with_errors_and_warnings_conform(spec_client: SpecClient) -> None:
    """Codes held up by offline, delayed, failed, terminal, unpaid and unlinked locks conform."""
    client = spec_client
    for device_id in (BROKEN, UNPAID, UNLINKED):
        held = await _code(client, device_id, 1, 5)
        client.advance(2 * LATENCY)
        assert (await _read(client, held))["access_code"]["errors"], device_id
        await client.call("/devices/get", device_id=device_id)
    for at in (100, 200, 300):
        client.advance(at + 1 - client.sandbox.clock.elapsed())
        held = await _code(client, FLAKY, 1, 5)
        answer = (await _read(client, held))["access_code"]
        assert answer["errors"] or answer["warnings"], at
        await client.call("/devices/get", device_id=FLAKY)


async def test_generate_code_in_openapi_shape_conforms(seam_spec: SeamSpec) -> None:
    """generate_code in the `access_code` shape answers a full access code per spec."""
    scenario = _scenario(generate_code_shape="access_code")
    client = SpecClient(Sandbox(scenario, clock=SandboxClock(speed=0)), seam_spec)
    try:
        await client.call("/access_codes/generate_code", device_id=LOCK)
        await client.call("/access_codes/generate_code", "GET", device_id=LOCK)
    finally:
        await client.aclose()


async def test_generate_code_default_shape_is_the_live_apis(spec_client: SpecClient) -> None:
    """By default generate_code answers {device_id, code} (live API and fake), not the spec's."""
    answer = await spec_client._http.post("/access_codes/generate_code", json={"device_id": LOCK})
    body = answer.json()
    assert set(body["generated_code"]) == {"device_id", "code"}
    assert spec_client.spec.errors("/access_codes/generate_code", "POST", body)


async def test_devices_conform(spec_client: SpecClient) -> None:
    """devices/list and devices/get answer per spec, online and offline locks alike."""
    client = spec_client
    client.advance(120)  # FLAKY is offline from 100 to 150
    listed = await client.call("/devices/list")
    assert {d["device_id"] for d in listed["devices"]} == {LOCK, FLAKY, BROKEN, UNPAID, UNLINKED}
    await client.call("/devices/list", "GET", device_ids=LOCK)
    offline = await client.call("/devices/get", device_id=FLAKY)
    assert offline["device"]["properties"]["online"] is False
    await client.call("/devices/get", "GET", device_id=LOCK)


async def test_webhooks_conform(spec_client: SpecClient) -> None:
    """webhooks create, list, get and delete answer per spec."""
    client = spec_client
    made = await client.call("/webhooks/create", url="http://127.0.0.1:9/hook")
    webhook_id = made["webhook"]["webhook_id"]
    await client.call("/webhooks/list")
    await client.call("/webhooks/get", webhook_id=webhook_id)
    await client.call("/webhooks/get", "GET", webhook_id=webhook_id)
    await client.call("/webhooks/delete", webhook_id=webhook_id)


async def _every_event_type(client: SpecClient) -> None:
    """Drive the sandbox through every event type it emits."""
    sandbox = client.sandbox
    code = await _code(client, FLAKY, 0.01, 5)  # starts at 36 s
    client.advance(60)
    for change in ({"name": "renamed"}, {"code": "98765"}, {"ends_at": _at(6)}):
        await client.call("/access_codes/update", access_code_id=code, **change)
        client.advance(2 * LATENCY)
    client.advance(100 - sandbox.clock.elapsed())
    for at in (110, 210, 310):  # offline / delayed / failed windows
        client.advance(at - sandbox.clock.elapsed())
        await _code(client, FLAKY, 1, 5)
    await _code(client, BROKEN, 1, 5)
    client.advance(2 * LATENCY)
    sandbox.change_pin_at_keypad(code, "55555")
    gone = await _code(client, LOCK, 1, 5)
    client.advance(2 * LATENCY)
    sandbox.delete_outside(gone)
    sandbox.take_offline(LOCK)
    client.advance(1)
    sandbox.bring_online(LOCK)
    await client.call("/access_codes/delete", access_code_id=code)
    client.advance(100)  # FLAKY's failed-to-set window (300-350 s) pauses the delete


async def test_events_conform(spec_client: SpecClient) -> None:
    """/events/list and /events/get answer per spec, and every event emitted matches its type."""
    client = spec_client
    await _every_event_type(client)
    listed = await client.call("/events/list", since=START.isoformat(), limit=1000)
    await client.call("/events/list", "GET", since=START.isoformat())
    types = {e["event_type"] for e in listed["events"]}
    expected = {
        "access_code.created", "access_code.changed", "access_code.scheduled_on_device",
        "access_code.set_on_device", "access_code.code_changed", "access_code.name_changed",
        "access_code.time_frame_changed", "access_code.delay_in_setting_on_device",
        "access_code.failed_to_set_on_device", "access_code.modified_external_to_seam",
        "access_code.deleted_external_to_seam", "access_code.removed_from_device",
        "access_code.deleted", "device.disconnected", "device.connected",
    }  # fmt: skip
    assert expected <= types, expected - types
    problems = {
        e["event_type"]: client.spec.event_errors(e)
        for e in client.sandbox.events()
        if client.spec.event_errors(e)
    }
    assert not problems, problems
    await client.call("/events/get", event_id=listed["events"][0]["event_id"])


def test_the_spec_check_catches_a_broken_event(seam_spec: SeamSpec) -> None:
    """An event without its access_code_id, or of an unknown type, is reported, not passed."""
    event = {
        "event_id": "e1", "event_type": "access_code.deleted", "workspace_id": "w",
        "created_at": "2030-01-01T00:00:00.000Z", "occurred_at": "2030-01-01T00:00:00.000Z",
        "device_id": "d", "connected_account_id": "c", "code": "1234",
    }  # fmt: skip
    assert any("access_code_id" in p for p in seam_spec.event_errors(event))
    assert seam_spec.event_errors(event | {"event_type": "access_code.exploded"})


OUR_ROUTES = [f"/access_codes/{r}" for r in CODE_ROUTES] + [
    "/devices/list", "/devices/get", "/events/list", "/events/get",
    "/webhooks/create", "/webhooks/list", "/webhooks/get", "/webhooks/delete",
    "/access_codes/create_multiple", "/access_codes/update_multiple",
    "/access_codes/pull_backup_access_code",
]  # fmt: skip


@pytest.mark.parametrize("route", OUR_ROUTES)
def test_sandbox_accepts_the_methods_the_spec_gives(seam_spec: SeamSpec, route: str) -> None:
    """Each route we serve takes exactly the HTTP methods Seam's spec gives it."""
    assert allowed_methods(route) == seam_spec.methods(route)


async def test_backup_pool_conforms(seam_spec: SeamSpec) -> None:
    """Pooled codes, a pull (twice), the original after it, an empty pool on the device and its
    codes, and the backup_access_code_pulled event answer per spec."""
    pooled = DeviceSpec(id=LOCK, latency=Latency.fixed(LATENCY), backup_pool_size=1)
    salto = DeviceSpec(id=FLAKY, supports_backup_access_code_pool=False)
    sandbox = Sandbox(Scenario(devices=[pooled, salto]), clock=SandboxClock(speed=0, start=START))
    client = SpecClient(sandbox, seam_spec)
    try:
        window: dict[str, Any] = {
            "starts_at": _at(1),
            "ends_at": _at(5),
            "use_backup_access_code_pool": True,
        }
        first = await client.call("/access_codes/create", device_id=LOCK, **window)
        second = await client.call("/access_codes/create", device_id=LOCK, **window)
        await client.call("/access_codes/create", device_id=FLAKY, **window)
        first_id = first["access_code"]["access_code_id"]
        pulled = await client.call("/access_codes/pull_backup_access_code", access_code_id=first_id)
        assert pulled["backup_access_code"]["is_backup"] is True
        await client.call("/access_codes/pull_backup_access_code", access_code_id=first_id)
        assert (await _read(client, first_id))["access_code"]["warnings"]
        empty = await _read(client, second["access_code"]["access_code_id"])
        assert empty["access_code"]["errors"]
        device = await client.call("/devices/get", device_id=LOCK)
        assert device["device"]["properties"]["backup_access_code_pool_enabled"] is True
        await client.call("/devices/list")
        events = [e for e in sandbox.events() if "backup" in e["event_type"]]
        assert len(events) == 1 and not seam_spec.event_errors(events[0])
    finally:
        await client.aclose()


async def test_create_and_update_multiple_conform(spec_client: SpecClient) -> None:
    """create_multiple (POST, PUT; shared and custom PIN) and update_multiple (PATCH, POST)
    answer per spec."""
    client = spec_client
    window: dict[str, Any] = {"starts_at": _at(1), "ends_at": _at(5)}
    shared = await client.call("/access_codes/create_multiple", device_ids=[LOCK, FLAKY], **window)
    key = shared["access_codes"][0]["common_code_key"]
    await client.call("/access_codes/create_multiple", "PUT", device_ids=[LOCK], code="97531")
    await client.call("/access_codes/update_multiple", "PATCH", common_code_key=key, ends_at=_at(6))
    await client.call("/access_codes/update_multiple", common_code_key=key, name="renamed")
    await client.call("/access_codes/list", device_id=LOCK)
