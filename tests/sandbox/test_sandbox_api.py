"""Routes, auth and Seam-shaped errors."""

from __future__ import annotations

import httpx
import pytest
from sandbox_helpers import LOCK, MakeClient, at, create

from seam_sandbox import Sandbox, Scenario

pytestmark = pytest.mark.anyio

CODE_FIELDS = {
    "access_code_id", "device_id", "workspace_id", "name", "code", "type", "status",
    "starts_at", "ends_at", "created_at", "errors", "warnings", "pending_mutations",
    "is_scheduled_on_device", "is_managed", "is_waiting_for_code_assignment",
    "is_one_time_use", "is_offline_access_code", "is_external_modification_allowed",
    "is_backup_access_code_available", "common_code_key",
}  # fmt: skip


async def test_health_needs_no_key(sb: Sandbox, make_client: MakeClient) -> None:
    """/health answers ok without an API key."""
    response = await make_client(sb, key="").get("/health")
    assert response.status_code == 200
    assert response.json()["ok"] is True


async def test_missing_key_is_unauthorized(sb: Sandbox, make_client: MakeClient) -> None:
    """A request without a bearer key gets 401 unauthorized in Seam's error body."""
    response = await make_client(sb, key="").post("/devices/list", json={})
    assert response.status_code == 401
    assert response.json() == {
        "error": {"type": "unauthorized", "message": "Unauthorized"},
        "ok": False,
    }


async def test_wrong_key_is_unauthorized(sb: Sandbox, make_client: MakeClient) -> None:
    """A wrong bearer key gets 401 unauthorized."""
    response = await make_client(sb, key="nope").post("/devices/list", json={})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthorized"


async def test_every_answer_has_a_request_id(client: httpx.AsyncClient) -> None:
    """Successes and errors alike carry a seam-request-id header."""
    ok = await client.post("/devices/list", json={})
    missing = await client.post("/access_codes/get", json={"access_code_id": "nope"})
    assert ok.json()["ok"] is True
    assert ok.headers["seam-request-id"] and missing.headers["seam-request-id"]
    assert ok.headers["seam-request-id"] != missing.headers["seam-request-id"]


async def test_generate_code_proposes_a_pin(sb: Sandbox, client: httpx.AsyncClient) -> None:
    """By default generate_code answers Seam's real {device_id, code} and creates nothing."""
    response = await client.get("/access_codes/generate_code", params={"device_id": LOCK})
    generated = response.json()["generated_code"]
    assert set(generated) == {"device_id", "code"}
    assert generated["device_id"] == LOCK and len(generated["code"]) == 6
    assert sb.codes_on(LOCK) == []


async def test_generate_code_access_code_shape(make_client: MakeClient) -> None:
    """With generate_code_shape=access_code it answers a created access code that lives on."""
    sandbox = Sandbox(Scenario(generate_code_shape="access_code"))
    client = make_client(sandbox)
    device = sandbox.device_ids[0]
    response = await client.post("/access_codes/generate_code", json={"device_id": device})
    generated = response.json()["generated_code"]
    assert CODE_FIELDS <= set(generated)
    assert generated["pending_mutations"][0]["mutation_code"] == "creating"
    assert [c["access_code_id"] for c in sandbox.codes_on(device)] == [generated["access_code_id"]]


async def test_generate_code_unknown_device(client: httpx.AsyncClient) -> None:
    """generate_code for an unknown device is 404 device_not_found."""
    response = await client.post("/access_codes/generate_code", json={"device_id": "ghost"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "device_not_found"


async def test_create_answers_a_full_access_code(client: httpx.AsyncClient) -> None:
    """create answers every field of Seam's access code object."""
    response = await create(client, code="4321", name="Stay 1", starts_at=at(60), ends_at=at(600))
    code = response.json()["access_code"]
    assert CODE_FIELDS <= set(code)
    assert code["type"] == "time_bound" and code["code"] == "4321" and code["name"] == "Stay 1"
    assert code["is_managed"] is True and code["is_waiting_for_code_assignment"] is False
    assert code["starts_at"] == at(60)


async def test_create_without_device_id_is_invalid(client: httpx.AsyncClient) -> None:
    """create without device_id is 400 invalid_input naming the field."""
    response = await client.post("/access_codes/create", json={"code": "1234"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert "device_id" in error["validation_errors"]


@pytest.mark.parametrize("pin", ["123", "12a4", "1234567890123"])
async def test_create_rejects_pins_that_are_not_4_to_12_digits(
    client: httpx.AsyncClient, pin: str
) -> None:
    """A code that is not 4-12 digits is 400 invalid_input."""
    response = await create(client, code=pin)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_input"


async def test_create_rejects_half_a_time_frame(client: httpx.AsyncClient) -> None:
    """starts_at without ends_at is 400 invalid_input."""
    response = await create(client, starts_at=at(60))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_input"


async def test_create_rejects_ends_before_starts(client: httpx.AsyncClient) -> None:
    """ends_at not after starts_at is 400 invalid_input."""
    response = await create(client, starts_at=at(600), ends_at=at(60))
    assert response.status_code == 400


async def test_create_rejects_ends_in_the_past(client: httpx.AsyncClient) -> None:
    """ends_at before the sandbox's now is 400 invalid_input."""
    response = await create(client, starts_at=at(-600), ends_at=at(-60))
    assert response.status_code == 400
    assert "ends_at" in response.json()["error"]["validation_errors"]


async def test_unparsable_json_is_invalid_input(client: httpx.AsyncClient) -> None:
    """A body that is not JSON is 400 invalid_input."""
    response = await client.post("/access_codes/create", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_input"


async def test_create_on_unknown_device_is_device_not_found(client: httpx.AsyncClient) -> None:
    """create on an unknown device is 404 device_not_found."""
    response = await create(client, device_id="ghost")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "device_not_found"


async def test_same_pin_on_a_device_is_duplicate(client: httpx.AsyncClient) -> None:
    """Creating a PIN already live on the device is 409 duplicate_access_code."""
    await create(client, code="1111")
    response = await create(client, code="1111")
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "duplicate_access_code"


async def test_get_by_id_and_by_device_and_pin(client: httpx.AsyncClient) -> None:
    """get finds a code by access_code_id (POST or GET) and by device_id + code."""
    created = (await create(client, code="2222")).json()["access_code"]
    by_id = await client.get(
        "/access_codes/get", params={"access_code_id": created["access_code_id"]}
    )
    by_pin = await client.post("/access_codes/get", json={"device_id": LOCK, "code": "2222"})
    assert by_id.json()["access_code"]["access_code_id"] == created["access_code_id"]
    assert by_pin.json()["access_code"]["access_code_id"] == created["access_code_id"]


async def test_get_unknown_code_is_access_code_not_found(client: httpx.AsyncClient) -> None:
    """get of an unknown code is 404 access_code_not_found."""
    response = await client.post("/access_codes/get", json={"access_code_id": "nope"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "access_code_not_found"


async def test_list_by_device_holds_only_that_device(make_client: MakeClient) -> None:
    """list by device_id returns that device's codes only."""
    sandbox = Sandbox(Scenario(device_count=2))
    client = make_client(sandbox)
    first, second = sandbox.device_ids
    await client.post("/access_codes/create", json={"device_id": first})
    await client.post("/access_codes/create", json={"device_id": second})
    listed = (await client.post("/access_codes/list", json={"device_id": first})).json()
    assert [c["device_id"] for c in listed["access_codes"]] == [first]


async def test_list_by_ids_repeated_or_comma_separated(client: httpx.AsyncClient) -> None:
    """GET list takes access_code_ids as repeated params or comma-separated."""
    ids = [(await create(client)).json()["access_code"]["access_code_id"] for _ in range(3)]
    repeated = await client.get(
        "/access_codes/list", params=[("access_code_ids", i) for i in ids[:2]]
    )
    comma = await client.get("/access_codes/list", params={"access_code_ids": ",".join(ids[1:])})
    assert {c["access_code_id"] for c in repeated.json()["access_codes"]} == set(ids[:2])
    assert {c["access_code_id"] for c in comma.json()["access_codes"]} == set(ids[1:])


async def test_devices_list_and_get(client: httpx.AsyncClient) -> None:
    """devices/list lists the scenario's devices and devices/get returns one."""
    listed = (await client.get("/devices/list")).json()["devices"]
    got = (await client.post("/devices/get", json={"device_id": LOCK})).json()["device"]
    assert [d["device_id"] for d in listed] == [LOCK]
    assert got["device_id"] == LOCK and got["properties"]["online"] is True


async def test_devices_get_unknown_is_device_not_found(client: httpx.AsyncClient) -> None:
    """devices/get of an unknown device is 404 device_not_found."""
    response = await client.get("/devices/get", params={"device_id": "ghost"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "device_not_found"


@pytest.mark.parametrize(("method", "route"), [("PUT", "/access_codes/create"),
                                               ("GET", "/access_codes/delete"),
                                               ("DELETE", "/devices/list")])  # fmt: skip
async def test_other_methods_are_not_allowed(
    client: httpx.AsyncClient, method: str, route: str
) -> None:
    """Methods Seam does not accept on a route (per its spec) are 405 method_not_allowed."""
    response = await client.request(method, route)
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "method_not_allowed"


async def test_unknown_route_is_not_found(client: httpx.AsyncClient) -> None:
    """An unknown route is 404 not_found."""
    response = await client.post("/locks/unlock_door", json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
