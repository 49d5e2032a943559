"""Backup access code pools: device support, availability on codes, pulling, an empty pool."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_helpers import LOCK, MakeClient, at, code_of, create, frozen_sandbox

from seam_sandbox import DeviceSpec, Latency, Sandbox, Scenario

pytestmark = pytest.mark.anyio
SALTO = "lock-salto"  # Seam: Salto locks have no backup pool
PULL = "/access_codes/pull_backup_access_code"


def _sandbox(pool_size: int = 3) -> Sandbox:
    return frozen_sandbox(
        Scenario(
            devices=[
                DeviceSpec(id=LOCK, latency=Latency.fixed(10), backup_pool_size=pool_size),
                DeviceSpec(id=SALTO, supports_backup_access_code_pool=False),
            ]
        )
    )


@pytest.fixture
def pooled(make_client: MakeClient) -> httpx.AsyncClient:
    return make_client(_sandbox())


async def _pooled_code(client: httpx.AsyncClient, device_id: str = LOCK, **body: Any) -> str:
    body = {"starts_at": at(3600), "ends_at": at(7200), "use_backup_access_code_pool": True} | body
    response = await create(client, device_id=device_id, **body)
    assert response.status_code == 200, response.text
    access_code_id: str = response.json()["access_code"]["access_code_id"]
    return access_code_id


async def _device(client: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    device: dict[str, Any] = (
        await client.post("/devices/get", json={"device_id": device_id})
    ).json()["device"]
    return device


async def test_devices_say_whether_they_support_a_pool(pooled: httpx.AsyncClient) -> None:
    """properties.supports_backup_access_code_pool follows the scenario (default true)."""
    assert (await _device(pooled, LOCK))["properties"]["supports_backup_access_code_pool"] is True
    salto = (await _device(pooled, SALTO))["properties"]
    assert salto["supports_backup_access_code_pool"] is False


async def test_the_pool_turns_on_with_the_first_pooled_create(pooled: httpx.AsyncClient) -> None:
    """backup_access_code_pool_enabled is false until a create uses the pool, then true."""
    assert (await _device(pooled, LOCK))["properties"]["backup_access_code_pool_enabled"] is False
    await _pooled_code(pooled)
    assert (await _device(pooled, LOCK))["properties"]["backup_access_code_pool_enabled"] is True


async def test_a_pooled_code_has_a_backup_available(pooled: httpx.AsyncClient) -> None:
    """A time-bound code created with the pool on a supporting lock has a backup available."""
    code = await code_of(pooled, await _pooled_code(pooled))
    assert code["is_backup_access_code_available"] is True
    assert code["is_backup"] is False and code["pulled_backup_access_code_id"] is None


async def test_no_backup_without_the_pool(pooled: httpx.AsyncClient) -> None:
    """A code created without the pool, on a lock that never turned it on, has no backup."""
    response = await create(pooled, starts_at=at(3600), ends_at=at(7200))
    assert response.json()["access_code"]["is_backup_access_code_available"] is False


async def test_an_unsupporting_lock_makes_the_code_without_a_backup(
    pooled: httpx.AsyncClient,
) -> None:
    """use_backup_access_code_pool on a lock without a pool creates the code, no backup."""
    code = await code_of(pooled, await _pooled_code(pooled, device_id=SALTO))
    assert code["is_backup_access_code_available"] is False
    pulled = await pooled.post(PULL, json={"access_code_id": code["access_code_id"]})
    assert pulled.status_code == 400
    assert pulled.json()["error"]["type"] == "empty_backup_access_code_pool"


async def test_an_ongoing_code_cannot_use_the_pool(pooled: httpx.AsyncClient) -> None:
    """use_backup_access_code_pool on an ongoing code is a 400 invalid_input."""
    response = await create(pooled, use_backup_access_code_pool=True)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_input"


async def test_a_pulled_backup_works_at_once_until_the_originals_end(
    pooled: httpx.AsyncClient,
) -> None:
    """The backup is set now, has its own PIN and is_backup, and ends with the original."""
    original_id = await _pooled_code(pooled)
    original = await code_of(pooled, original_id)
    answer = (await pooled.post(PULL, json={"access_code_id": original_id})).json()
    backup = answer["backup_access_code"]
    assert answer["access_code"] == backup
    assert backup["is_backup"] is True and backup["status"] == "set"
    assert backup["is_scheduled_on_device"] is True
    assert backup["code"] != original["code"] and backup["device_id"] == LOCK
    assert backup["starts_at"] == at(0) and backup["ends_at"] == original["ends_at"]
    assert backup["name"] == f"Backup {backup['access_code_id']} (Seam)"


async def test_the_original_points_at_its_backup(pooled: httpx.AsyncClient) -> None:
    """After a pull the original has pulled_backup_access_code_id and the warning."""
    original_id = await _pooled_code(pooled)
    backup = (await pooled.post(PULL, json={"access_code_id": original_id})).json()
    original = await code_of(pooled, original_id)
    assert original["pulled_backup_access_code_id"] == backup["access_code"]["access_code_id"]
    warnings = [w["warning_code"] for w in original["warnings"]]
    assert warnings == ["using_backup_access_code"]


async def test_pulling_again_returns_the_same_backup(pooled: httpx.AsyncClient) -> None:
    """A second pull for the same code returns the same backup."""
    first_id = await _pooled_code(pooled)
    first = (await pooled.post(PULL, json={"access_code_id": first_id})).json()
    again = (await pooled.post(PULL, json={"access_code_id": first_id})).json()
    assert again["access_code"]["access_code_id"] == first["access_code"]["access_code_id"]


async def test_an_empty_pool_is_refused(make_client: MakeClient) -> None:
    """With a pool of one, a second code's pull answers 400 empty_backup_access_code_pool."""
    client = make_client(_sandbox(pool_size=1))
    first, second = await _pooled_code(client), await _pooled_code(client)
    assert (await client.post(PULL, json={"access_code_id": first})).status_code == 200
    again = await client.post(PULL, json={"access_code_id": first})
    assert again.status_code == 200  # the same backup: no second one taken
    refused = await client.post(PULL, json={"access_code_id": second})
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "empty_backup_access_code_pool"


async def test_an_empty_pool_shows_on_the_device_and_its_codes(make_client: MakeClient) -> None:
    """Once the pool is empty the device and its codes show empty_backup_access_code_pool and
    codes that never pulled one have no backup available."""
    client = make_client(_sandbox(pool_size=1))
    first, second = await _pooled_code(client), await _pooled_code(client)
    await client.post(PULL, json={"access_code_id": first})
    device_errors = [e["error_code"] for e in (await _device(client, LOCK))["errors"]]
    assert device_errors == ["empty_backup_access_code_pool"]
    other = await code_of(client, second)
    assert other["is_backup_access_code_available"] is False
    assert [e["error_code"] for e in other["errors"]] == ["empty_backup_access_code_pool"]
    assert other["errors"][0]["is_device_error"] is True
    assert (await code_of(client, first))["is_backup_access_code_available"] is True


async def test_a_pool_of_none_is_empty_from_the_start(make_client: MakeClient) -> None:
    """backup_pool_size 0: the pool is empty as soon as it is turned on."""
    client = make_client(_sandbox(pool_size=0))
    code = await code_of(client, await _pooled_code(client))
    assert code["is_backup_access_code_available"] is False
    assert [e["error_code"] for e in code["errors"]] == ["empty_backup_access_code_pool"]


async def test_an_update_can_turn_the_pool_on(pooled: httpx.AsyncClient) -> None:
    """update with use_backup_access_code_pool turns the lock's pool on for its codes."""
    made = await create(pooled, starts_at=at(3600), ends_at=at(7200))
    access_code_id = made.json()["access_code"]["access_code_id"]
    body = {"access_code_id": access_code_id, "use_backup_access_code_pool": True}
    assert (await pooled.post("/access_codes/update", json=body)).status_code == 200
    assert (await code_of(pooled, access_code_id))["is_backup_access_code_available"] is True


async def test_an_ongoing_code_has_no_backup_to_pull(pooled: httpx.AsyncClient) -> None:
    """Pulling for an ongoing code is a 400 access_code_not_time_bound (Seam's fake)."""
    await _pooled_code(pooled)
    ongoing = (await create(pooled)).json()["access_code"]["access_code_id"]
    response = await pooled.post(PULL, json={"access_code_id": ongoing})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "access_code_not_time_bound"


async def test_a_pull_emits_its_event(make_client: MakeClient) -> None:
    """A pull emits access_code.backup_access_code_pulled for the original, naming the backup,
    and no scheduled_on_device/set_on_device for the backup (it was on the lock already)."""
    sb = _sandbox()
    client = make_client(sb)
    original_id = await _pooled_code(client)
    backup = (await client.post(PULL, json={"access_code_id": original_id})).json()
    backup_id = backup["access_code"]["access_code_id"]
    sb.clock.advance(7200)
    pulled = [e for e in sb.events() if e["event_type"] == "access_code.backup_access_code_pulled"]
    assert len(pulled) == 1
    assert pulled[0]["access_code_id"] == original_id
    assert pulled[0]["backup_access_code_id"] == backup_id
    assert pulled[0]["occurred_at"] == at(0)
    of_backup = [e["event_type"] for e in sb.events() if e.get("access_code_id") == backup_id]
    assert of_backup == ["access_code.removed_from_device", "access_code.deleted"]


async def test_a_backup_is_gone_with_the_originals_end(make_client: MakeClient) -> None:
    """The backup is removed at the original's ends_at (404 after it)."""
    sb = _sandbox()
    client = make_client(sb)
    original_id = await _pooled_code(client)
    backup = (await client.post(PULL, json={"access_code_id": original_id})).json()
    sb.clock.advance(7200)
    gone = await client.post(
        "/access_codes/get", json={"access_code_id": backup["access_code"]["access_code_id"]}
    )
    assert gone.status_code == 404
