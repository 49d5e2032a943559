"""The per-lock index of codes agrees with a scan of every code, through the HTTP API only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_helpers import MakeClient, at, frozen_sandbox

from seam_sandbox import DeviceSpec, Latency, RateLimits, Scenario

pytestmark = pytest.mark.anyio

LOCKS = ["lock-a", "lock-b", "lock-c"]


async def _post(client: httpx.AsyncClient, route: str, **body: Any) -> dict[str, Any]:
    response = await client.post(route, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _by_lock(client: httpx.AsyncClient) -> dict[str, list[tuple[str, str]]]:
    """(id, PIN) of each lock's live codes, listed by device_id (answered from the index)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for lock in LOCKS:
        codes = (await _post(client, "/access_codes/list", device_id=lock))["access_codes"]
        assert all(c["device_id"] == lock for c in codes)
        found[lock] = [(c["access_code_id"], c["code"]) for c in codes]
    return found


async def _scanned(client: httpx.AsyncClient, ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """The same, from a list by access_code_ids (a scan of every code), split by device_id."""
    codes = (await _post(client, "/access_codes/list", access_code_ids=ids))["access_codes"]
    found: dict[str, list[tuple[str, str]]] = {lock: [] for lock in LOCKS}
    for c in codes:
        found[c["device_id"]].append((c["access_code_id"], c["code"]))
    return found


async def test_lock_index_agrees_with_a_full_scan(make_client: MakeClient) -> None:
    """After creates, updates (one naming another lock), deletes and expiries, each lock's
    listing, its PIN lookups and the stats' per-lock counts match a scan of all codes, in
    creation order, and hold exactly the codes the script expects to be live."""
    devices = [DeviceSpec(id=lock, latency=Latency.fixed(10)) for lock in LOCKS]
    sb = frozen_sandbox(Scenario(devices=devices, rate_limits=RateLimits(per_device=False)))
    client = make_client(sb)
    ids: list[str] = []  # every code created, in creation order
    home: dict[str, str] = {}

    async def new(lock: str, **body: Any) -> str:
        code = (await _post(client, "/access_codes/create", device_id=lock, **body))["access_code"]
        ids.append(code["access_code_id"])
        home[code["access_code_id"]] = lock
        return str(code["access_code_id"])

    async def update(access_code_id: str, **body: Any) -> None:
        await _post(client, "/access_codes/update", access_code_id=access_code_id, **body)

    async def check(expected_live: set[str]) -> None:
        by_lock, scanned = await _by_lock(client), await _scanned(client, ids)
        assert by_lock == scanned
        assert {i for pairs in by_lock.values() for i, _ in pairs} == expected_live
        for lock, pairs in by_lock.items():
            expected = [i for i in ids if i in expected_live and home[i] == lock]
            assert [i for i, _ in pairs] == expected
            for access_code_id, pin in pairs:
                got = await _post(client, "/access_codes/get", device_id=lock, code=pin)
                assert got["access_code"]["access_code_id"] == access_code_id
        stats = (await client.get("/_sandbox/stats")).json()
        assert stats["codes_per_device"] == {lock: len(by_lock[lock]) for lock in LOCKS}

    for n in range(12):  # interleaved over the locks; lock-a's with chosen PINs 40nn
        pin = {"code": f"{4000 + n}"} if n % 3 == 0 else {}
        await new(LOCKS[n % 3], name=f"stay-{n}", **pin)
    expiring = [await new(lock, starts_at=at(60), ends_at=at(300)) for lock in LOCKS]
    await check(set(ids))

    # Updates: a new PIN, a new name, new time frames, and one naming another lock (the
    # sandbox takes no device_id on update; whatever it does, index and scan must agree).
    await update(ids[1], code="777777")
    await update(ids[2], name="renamed")
    await update(ids[4], starts_at=at(5), ends_at=at(86_400))
    await update(expiring[0], ends_at=at(86_400))
    await update(ids[5], device_id=LOCKS[0])
    # Deletes: live (in `removing`) until the 10 s deleting mutation is done.
    deleted = {ids[0], ids[7], ids[11]}
    for access_code_id in deleted:
        await _post(client, "/access_codes/delete", access_code_id=access_code_id)
    await check(set(ids))

    sb.clock.advance(10)
    await check(set(ids) - deleted)

    # PIN checks use the lock's live codes only: a deleted code's PIN is free again on its
    # lock; a live one is taken there (409) but free on another lock. Then time frames end.
    await new(LOCKS[0], code="4000")
    taken = await client.post("/access_codes/create", json={"device_id": LOCKS[0], "code": "4003"})
    assert taken.status_code == 409
    await new(LOCKS[1], code="4003")
    sb.clock.advance(300)
    await check(set(ids) - deleted - set(expiring[1:]))  # expiring[0] was extended
