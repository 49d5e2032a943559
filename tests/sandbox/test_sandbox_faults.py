"""Faults by scenario: offline devices, delays, failures, terminal errors, 409s, 5xx, drops."""

from __future__ import annotations

import time

import pytest
from sandbox_helpers import LOCK, MakeClient, at, code_of, create, frozen_sandbox, mutations

from seam_sandbox import DeviceSpec, Drop, Fault, Latency, Outage, Scenario, Slow

pytestmark = pytest.mark.anyio


def one_lock(*faults: Fault, **scenario: object) -> Scenario:
    device = DeviceSpec(id=LOCK, latency=Latency.fixed(10), faults=list(faults))
    return Scenario.model_validate({"devices": [device]} | scenario)


async def test_offline_device_holds_codes_back_then_programs_them(
    make_client: MakeClient,
) -> None:
    """While offline, codes carry device_offline and stay unscheduled; then programming resumes."""
    sb = frozen_sandbox(one_lock(Fault(kind="device_offline", start=5, duration=30)))
    client = make_client(sb)
    access_code_id = (await create(client)).json()["access_code"]["access_code_id"]
    sb.clock.advance(20)
    code = await code_of(client, access_code_id)
    assert code["is_scheduled_on_device"] is False
    assert code["errors"] == [
        {
            "error_code": "device_offline",
            "message": "Device is offline",
            "created_at": at(5),
            "is_access_code_error": False,
            "is_device_error": True,
            "is_connected_account_error": False,
        }
    ]
    device = (await client.post("/devices/get", json={"device_id": LOCK})).json()["device"]
    assert device["properties"]["online"] is False
    sb.clock.advance(15)  # back online at 35 s; 5 s of programming left
    assert (await code_of(client, access_code_id))["errors"] == []
    sb.clock.advance(5)
    assert (await code_of(client, access_code_id))["is_scheduled_on_device"] is True


async def test_offline_error_shows_on_scheduled_codes_too(make_client: MakeClient) -> None:
    """device_offline is a device error: it shows on codes already on the lock."""
    sb = frozen_sandbox(one_lock(Fault(kind="device_offline", start=60, duration=30)))
    client = make_client(sb)
    access_code_id = (await create(client)).json()["access_code"]["access_code_id"]
    sb.clock.advance(70)
    code = await code_of(client, access_code_id)
    assert code["is_scheduled_on_device"] is True
    assert [e["error_code"] for e in code["errors"]] == ["device_offline"]


async def test_delay_in_setting_warns_then_succeeds(make_client: MakeClient) -> None:
    """delay_in_setting_on_device warns while it lasts, then the code gets scheduled."""
    sb = frozen_sandbox(one_lock(Fault(kind="delay_in_setting_on_device", duration=60)))
    client = make_client(sb)
    access_code_id = (await create(client)).json()["access_code"]["access_code_id"]
    sb.clock.advance(30)
    code = await code_of(client, access_code_id)
    assert [w["warning_code"] for w in code["warnings"]] == ["delay_in_setting_on_device"]
    assert code["errors"] == []
    sb.clock.advance(40)
    code = await code_of(client, access_code_id)
    assert code["warnings"] == [] and code["is_scheduled_on_device"] is True


async def test_failed_to_set_clears_later(make_client: MakeClient) -> None:
    """failed_to_set_on_device shows as an access-code error for a while, then clears."""
    sb = frozen_sandbox(one_lock(Fault(kind="failed_to_set_on_device", duration=60)))
    client = make_client(sb)
    access_code_id = (await create(client)).json()["access_code"]["access_code_id"]
    sb.clock.advance(30)
    error = (await code_of(client, access_code_id))["errors"][0]
    assert error["error_code"] == "failed_to_set_on_device"
    assert error["is_access_code_error"] is True and error["is_device_error"] is False
    sb.clock.advance(40)
    code = await code_of(client, access_code_id)
    assert code["errors"] == [] and code["is_scheduled_on_device"] is True


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="no_space_for_access_code_on_device"),
        Fault(kind="duplicate_code_on_device"),
        Fault(kind="terminal_error", error_code="subscription_required"),
    ],
)
async def test_terminal_errors_never_clear(make_client: MakeClient, fault: Fault) -> None:
    """A terminal fault puts its error on the code after the latency; it is never scheduled."""
    sb = frozen_sandbox(one_lock(fault))
    client = make_client(sb)
    access_code_id = (await create(client)).json()["access_code"]["access_code_id"]
    sb.clock.advance(5)
    assert (await code_of(client, access_code_id))["errors"] == []
    sb.clock.advance(10_000)
    code = await code_of(client, access_code_id)
    assert [e["error_code"] for e in code["errors"]] == [fault.code]
    assert code["is_scheduled_on_device"] is False and mutations(code) == ["creating"]
    assert sb.mark_scheduled_at(access_code_id) is None


async def test_terminal_fault_with_count_hits_the_first_codes_only(
    make_client: MakeClient,
) -> None:
    """A terminal fault with count=1 hits the first code only."""
    sb = frozen_sandbox(one_lock(Fault(kind="no_space_for_access_code_on_device", count=1)))
    client = make_client(sb)
    first = (await create(client)).json()["access_code"]["access_code_id"]
    second = (await create(client)).json()["access_code"]["access_code_id"]
    sb.clock.advance(10)
    assert (await code_of(client, first))["errors"] != []
    assert (await code_of(client, second))["is_scheduled_on_device"] is True


async def test_forced_duplicate_on_first_creates(make_client: MakeClient) -> None:
    """The duplicate_access_code fault answers 409 to the first N creates of the device."""
    sb = frozen_sandbox(one_lock(Fault(kind="duplicate_access_code", count=2)))
    client = make_client(sb)
    statuses = [(await create(client)).status_code for _ in range(3)]
    assert statuses == [409, 409, 200]


async def test_outage_answers_503_with_an_empty_body(make_client: MakeClient) -> None:
    """During an outage every route answers 503 with an empty body; afterwards it recovers."""
    sb = frozen_sandbox(one_lock(outages=[Outage(start=10, duration=20)]))
    client = make_client(sb)
    sb.clock.advance(10)
    response = await client.post("/devices/list", json={})
    assert response.status_code == 503 and response.content == b""
    assert response.headers["seam-request-id"]
    sb.clock.advance(20)
    assert (await client.post("/devices/list", json={})).status_code == 200


async def test_outage_on_listed_routes_with_seam_body(make_client: MakeClient) -> None:
    """An outage on listed routes leaves the others up and can carry Seam's error body."""
    outage = Outage(routes=["/access_codes/create"], status=502, body="seam")
    sb = frozen_sandbox(one_lock(outages=[outage]))
    client = make_client(sb)
    response = await create(client)
    assert response.status_code == 502
    assert response.json()["ok"] is False
    assert (await client.post("/devices/list", json={})).status_code == 200


async def test_slow_routes_answer_late(make_client: MakeClient) -> None:
    """A slow rule adds real seconds to the listed route only."""
    sb = frozen_sandbox(one_lock(slow=[Slow(seconds=0.2, routes=["/devices/list"])]))
    client = make_client(sb)
    started = time.monotonic()
    await client.post("/devices/get", json={"device_id": LOCK})
    fast = time.monotonic() - started
    await client.post("/devices/list", json={})
    assert fast < 0.15 and time.monotonic() - started - fast >= 0.2


async def test_drop_before_loses_the_request(make_client: MakeClient) -> None:
    """A drop raises ConnectionResetError in-process and, before handling, creates nothing."""
    sb = frozen_sandbox(one_lock(drops=[Drop(every_nth=2, routes=["/access_codes/create"])]))
    client = make_client(sb)
    assert (await create(client)).status_code == 200
    with pytest.raises(ConnectionResetError):
        await create(client)
    assert len(sb.codes_on(LOCK)) == 1
    assert sb.stats()["connections_dropped"] == 1


async def test_drop_after_loses_the_answer_only(make_client: MakeClient) -> None:
    """A drop after handling loses the answer of a create that took effect."""
    rule = Drop(probability=1.0, routes=["/access_codes/create"], when="after")
    sb = frozen_sandbox(one_lock(drops=[rule]))
    client = make_client(sb)
    with pytest.raises(ConnectionResetError):
        await create(client, name="Stay 1")
    assert [c["name"] for c in sb.codes_on(LOCK)] == ["Stay 1"]
