"""One PIN on several locks: create_multiple, update_multiple, common_code_key, and locks whose
PIN constraints refuse a shared PIN."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_helpers import MakeClient, at, code_of, create, frozen_sandbox

from seam_sandbox import DeviceSpec, Latency, Sandbox, Scenario

pytestmark = pytest.mark.anyio
FRONT, BACK, SHORT = "lock-front", "lock-back", "lock-short"
CREATE_MULTIPLE = "/access_codes/create_multiple"


def _sandbox() -> Sandbox:
    return frozen_sandbox(
        Scenario(
            devices=[
                DeviceSpec(id=FRONT, latency=Latency.fixed(10), taken_pins=["2468"]),
                DeviceSpec(id=BACK, latency=Latency.fixed(10)),
                DeviceSpec(id=SHORT, code_length=4, supported_code_lengths=[4]),
            ]
        )
    )


@pytest.fixture
def sb() -> Sandbox:
    return _sandbox()


@pytest.fixture
def client(sb: Sandbox, make_client: MakeClient) -> httpx.AsyncClient:
    return make_client(sb)


async def _multiple(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(CREATE_MULTIPLE, json={"device_ids": [FRONT, BACK]} | body)


async def test_a_generated_pin_is_shared_under_one_key(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """Without code, every lock gets the same PIN and one common_code_key; each is created."""
    codes = (await _multiple(client, name="stay")).json()["access_codes"]
    assert [c["device_id"] for c in codes] == [FRONT, BACK]
    assert codes[0]["code"] == codes[1]["code"]
    key = codes[0]["common_code_key"]
    assert key.startswith("auto_set_by_create_multiple_") and codes[1]["common_code_key"] == key
    created = [e for e in sb.events() if e["event_type"] == "access_code.created"]
    assert len(created) == 2


async def test_a_custom_code_leaves_the_key_null(client: httpx.AsyncClient) -> None:
    """With a custom code, every lock gets it and common_code_key stays null."""
    codes = (await _multiple(client, code="13579")).json()["access_codes"]
    assert [c["code"] for c in codes] == ["13579", "13579"]
    assert [c["common_code_key"] for c in codes] == [None, None]


async def test_throw_creates_nothing_when_one_lock_refuses(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """behavior throw (default): a PIN already on one lock answers 409 and creates nothing."""
    response = await _multiple(client, code="2468")
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "duplicate_access_code"
    assert sb.codes_on(FRONT) == [] and sb.codes_on(BACK) == []


async def test_create_random_code_gives_the_refusing_lock_its_own(
    client: httpx.AsyncClient,
) -> None:
    """create_random_code: the lock that refuses the PIN gets a random one, outside the group."""
    devices = {
        "device_ids": [FRONT, BACK],
        "behavior_when_code_cannot_be_shared": "create_random_code",
    }
    codes = (await _multiple(client, code="2468", **devices)).json()["access_codes"]
    by_lock = {c["device_id"]: c for c in codes}
    assert by_lock[BACK]["code"] == "2468"
    assert by_lock[FRONT]["code"] != "2468" and by_lock[FRONT]["common_code_key"] is None


async def test_locks_without_a_common_length_cannot_share(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """A 4-digit-only lock and a 5-digit custom PIN: throw answers 400 code_constraints_violated."""
    response = await _multiple(client, device_ids=[BACK, SHORT], code="13579")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "code_constraints_violated"
    assert sb.codes_on(BACK) == []


async def test_a_shared_pin_fits_every_lock(client: httpx.AsyncClient) -> None:
    """A generated shared PIN has a length every lock takes (the 4-digit lock's here)."""
    codes = (await _multiple(client, device_ids=[BACK, SHORT])).json()["access_codes"]
    assert {len(c["code"]) for c in codes} == {4}
    assert codes[0]["code"] == codes[1]["code"]


async def test_preferred_code_length_is_used_when_every_lock_takes_it(
    client: httpx.AsyncClient,
) -> None:
    """preferred_code_length 8 on locks of any length gives an 8-digit shared PIN."""
    codes = (await _multiple(client, preferred_code_length=8)).json()["access_codes"]
    assert {len(c["code"]) for c in codes} == {8}


async def test_update_multiple_moves_the_group(client: httpx.AsyncClient) -> None:
    """update_multiple {common_code_key, ends_at} moves every code of the group."""
    body = {"starts_at": at(3600), "ends_at": at(7200)}
    codes = (await _multiple(client, **body)).json()["access_codes"]
    key = codes[0]["common_code_key"]
    moved = await client.patch(
        "/access_codes/update_multiple", json={"common_code_key": key, "ends_at": at(9000)}
    )
    assert moved.status_code == 200 and moved.json() == {"ok": True}
    for code in codes:
        got = await code_of(client, code["access_code_id"])
        assert got["ends_at"] == at(9000) and got["starts_at"] == at(3600)


async def test_update_multiple_of_an_unknown_key_is_not_found(client: httpx.AsyncClient) -> None:
    """update_multiple for a key no live code has answers 404."""
    response = await client.post("/access_codes/update_multiple", json={"common_code_key": "x"})
    assert response.status_code == 404


async def test_create_joins_a_group_by_its_key(client: httpx.AsyncClient) -> None:
    """create with an existing common_code_key gets the group's PIN; another code is a 400."""
    codes = (await _multiple(client, device_ids=[FRONT])).json()["access_codes"]
    key = codes[0]["common_code_key"]
    joined = (await create(client, device_id=BACK, common_code_key=key)).json()["access_code"]
    assert joined["code"] == codes[0]["code"] and joined["common_code_key"] == key
    other = await create(client, device_id=SHORT, common_code_key=key, code="1111")
    assert other.status_code == 400


async def test_create_multiple_takes_put(client: httpx.AsyncClient) -> None:
    """create_multiple answers PUT (Seam's Python SDK's method) as POST."""
    response = await client.put(CREATE_MULTIPLE, json={"device_ids": [FRONT]})
    assert response.status_code == 200 and len(response.json()["access_codes"]) == 1


async def test_create_multiple_needs_device_ids(client: httpx.AsyncClient) -> None:
    """create_multiple without device_ids, or with an unknown lock, is refused (400/404)."""
    assert (await client.post(CREATE_MULTIPLE, json={})).status_code == 400
    unknown = await client.post(CREATE_MULTIPLE, json={"device_ids": [FRONT, "nope"]})
    assert unknown.status_code == 404


async def test_a_lock_refuses_a_pin_of_another_length(
    sb: Sandbox, client: httpx.AsyncClient
) -> None:
    """create of a 6-digit PIN on a 4-digit-only lock answers 400 code_constraints_violated."""
    response = await create(client, device_id=SHORT, code="123456")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "code_constraints_violated"
    assert sb.codes_on(SHORT) == []


async def test_a_pin_already_on_the_lock_is_a_duplicate(client: httpx.AsyncClient) -> None:
    """A PIN in the lock's taken_pins answers 409 on create and on update."""
    refused = await create(client, device_id=FRONT, code="2468")
    assert refused.status_code == 409
    made = (await create(client, device_id=FRONT, code="1357")).json()["access_code"]
    update = {"access_code_id": made["access_code_id"], "code": "2468"}
    assert (await client.post("/access_codes/update", json=update)).status_code == 409


async def test_devices_show_their_code_lengths(client: httpx.AsyncClient) -> None:
    """properties.supported_code_lengths shows the scenario's lengths (else code_length)."""
    listed = (await client.post("/devices/list", json={})).json()["devices"]
    lengths = {d["device_id"]: d["properties"]["supported_code_lengths"] for d in listed}
    assert lengths == {FRONT: [6], BACK: [6], SHORT: [4]}


def test_code_length_must_be_a_supported_length() -> None:
    """A device whose code_length is not among its supported_code_lengths is refused."""
    assert DeviceSpec(id="x", code_length=4, supported_code_lengths=[4, 6]).code_length == 4
    with pytest.raises(ValueError, match="supported_code_lengths"):
        DeviceSpec(id="x", code_length=6, supported_code_lengths=[4])
