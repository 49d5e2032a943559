"""429s: Seam's per-device limits and a per-key token bucket, on real (monotonic) time."""

from __future__ import annotations

import pytest
from sandbox_helpers import LOCK, FakeMonotonic, MakeClient, create, frozen_sandbox

from seam_sandbox import DeviceSpec, Latency, RateLimits, Sandbox, Scenario

pytestmark = pytest.mark.anyio


def limited(rate_limits: RateLimits, devices: int = 1) -> Scenario:
    ids = [LOCK] + [f"lock-{n}" for n in range(2, devices + 1)]
    return Scenario(
        devices=[DeviceSpec(id=i, latency=Latency.fixed(1)) for i in ids], rate_limits=rate_limits
    )


async def test_eleventh_create_in_a_minute_is_rate_limited(
    sb: Sandbox, make_client: MakeClient
) -> None:
    """The 11th create on a device within a minute is 429 too_many_requests, no Retry-After."""
    client = make_client(sb)
    statuses = [(await create(client)).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    response = await create(client)
    assert response.json()["error"]["type"] == "too_many_requests"
    assert "retry-after" not in response.headers


async def test_rate_limited_answer_can_carry_retry_after(make_client: MakeClient) -> None:
    """With retry_after set, the 429 carries Retry-After in whole seconds."""
    clock = FakeMonotonic()
    sb = frozen_sandbox(limited(RateLimits(retry_after=True)), monotonic=clock)
    client = make_client(sb)
    for _ in range(10):
        await create(client)
        clock.now += 1
    response = await create(client)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "50"


async def test_per_device_limit_is_per_device(make_client: MakeClient) -> None:
    """A device at its limit does not limit another device."""
    sb = frozen_sandbox(limited(RateLimits(), devices=2))
    client = make_client(sb)
    for _ in range(10):
        await create(client)
    assert (await create(client)).status_code == 429
    assert (await create(client, device_id="lock-2")).status_code == 200


async def test_per_device_limit_frees_up_after_a_real_minute(make_client: MakeClient) -> None:
    """The per-device window is 60 real seconds, whatever the sandbox clock does."""
    clock = FakeMonotonic()
    sb = frozen_sandbox(limited(RateLimits()), monotonic=clock)
    client = make_client(sb)
    for _ in range(10):
        await create(client)
    sb.clock.advance(3600)
    assert (await create(client)).status_code == 429
    clock.now += 60
    assert (await create(client)).status_code == 200


async def test_update_and_delete_limits(make_client: MakeClient) -> None:
    """Updates are limited to 10 and deletes to 20 per device per minute."""
    sb = frozen_sandbox(limited(RateLimits(create_per_minute=100)))
    client = make_client(sb)
    ids = [(await create(client)).json()["access_code"]["access_code_id"] for _ in range(21)]
    updates = [
        (await client.post("/access_codes/update", json={"access_code_id": i, "name": "x"}))
        for i in ids[:11]
    ]
    deletes = [(await client.post("/access_codes/delete", json={"access_code_id": i})) for i in ids]
    assert [r.status_code for r in updates] == [200] * 10 + [429]
    assert [r.status_code for r in deletes] == [200] * 20 + [429]


async def test_per_key_token_bucket(make_client: MakeClient) -> None:
    """Past the per-key burst, any route is 429 until tokens refill at per_key_rps."""
    clock = FakeMonotonic()
    limits = RateLimits(per_key_rps=2, per_key_burst=3, retry_after=True)
    sb = frozen_sandbox(limited(limits), monotonic=clock)
    client = make_client(sb)
    statuses = [(await client.post("/devices/list", json={})).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    clock.now += 0.5
    assert (await client.post("/devices/list", json={})).status_code == 200


async def test_per_key_limit_without_retry_after(make_client: MakeClient) -> None:
    """Without retry_after the per-key 429 has no Retry-After header."""
    sb = frozen_sandbox(limited(RateLimits(per_key_rps=1, per_key_burst=1)))
    client = make_client(sb)
    await client.post("/devices/list", json={})
    response = await client.post("/devices/list", json={})
    assert response.status_code == 429 and "retry-after" not in response.headers


async def test_per_device_limits_can_be_turned_off(make_client: MakeClient) -> None:
    """rate_limits.per_device=false lets any number of creates through."""
    sb = frozen_sandbox(limited(RateLimits(per_device=False)))
    client = make_client(sb)
    statuses = {(await create(client)).status_code for _ in range(15)}
    assert statuses == {200}
