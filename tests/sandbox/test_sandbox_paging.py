"""/access_codes/list pages like Seam: `limit`, `page_cursor`, `pagination`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_helpers import LOCK, MakeClient, at, create, frozen_sandbox

from seam_sandbox import DeviceSpec, Latency, Scenario

pytestmark = pytest.mark.anyio


def paged(size: int) -> Scenario:
    return Scenario(devices=[DeviceSpec(id=LOCK, latency=Latency.fixed(10))], list_page_size=size)


async def fill(client: httpx.AsyncClient, n: int) -> list[str]:
    ids = []
    for i in range(n):
        answer = await create(client, code=f"{1000 + i}", name=f"c{i}", starts_at=at(3600),
                              ends_at=at(7200))
        ids.append(answer.json()["access_code"]["access_code_id"])
    return ids


async def all_pages(client: httpx.AsyncClient, **body: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        sent = body | ({"page_cursor": cursor} if cursor else {})
        answer = (await client.post("/access_codes/list", json=sent)).json()
        pages.append([c["access_code_id"] for c in answer["access_codes"]])
        if not answer["pagination"]["has_next_page"]:
            assert answer["pagination"]["next_page_cursor"] is None
            return pages
        cursor = answer["pagination"]["next_page_cursor"]


async def test_default_page_size_pages_in_creation_order(make_client: MakeClient) -> None:
    """With list_page_size 3, seven codes come in pages of 3, 3, 1, in creation order."""
    client = make_client(frozen_sandbox(paged(3)))
    ids = await fill(client, 7)
    pages = await all_pages(client, device_id=LOCK)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for page in pages for i in page] == ids


async def test_limit_overrides_the_default(make_client: MakeClient) -> None:
    """`limit` sets the page size; the default page size is 500."""
    client = make_client(frozen_sandbox())
    ids = await fill(client, 5)
    assert await all_pages(client, device_id=LOCK, limit=2) == [ids[:2], ids[2:4], ids[4:]]
    assert await all_pages(client, device_id=LOCK) == [ids]


async def test_next_page_url_is_a_get_for_the_next_page(make_client: MakeClient) -> None:
    """`next_page_url` fetched with GET answers the same next page as the cursor does."""
    client = make_client(frozen_sandbox(paged(2)))
    ids = await fill(client, 3)
    first = (await client.post("/access_codes/list", json={"device_id": LOCK})).json()
    url = first["pagination"]["next_page_url"]
    second = (await client.get(url)).json()
    assert [c["access_code_id"] for c in second["access_codes"]] == ids[2:]
    assert second["pagination"] == {
        "has_next_page": False, "next_page_cursor": None, "next_page_url": None,
    }


async def test_a_code_deleted_between_pages_shifts_nothing(make_client: MakeClient) -> None:
    """Deleting a code of the first page before reading the second skips no other code."""
    sb = frozen_sandbox(paged(2))
    client = make_client(sb)
    ids = await fill(client, 4)
    first = (await client.post("/access_codes/list", json={"device_id": LOCK})).json()
    await client.post("/access_codes/delete", json={"access_code_id": ids[0]})
    sb.clock.advance(60)  # the delete goes through
    cursor = first["pagination"]["next_page_cursor"]
    body = {"device_id": LOCK, "page_cursor": cursor}
    second = (await client.post("/access_codes/list", json=body)).json()
    assert [c["access_code_id"] for c in second["access_codes"]] == ids[2:]


@pytest.mark.parametrize(
    ("field", "value"),
    [("limit", 0), ("limit", "many"), ("limit", True), ("page_cursor", "not-a-cursor")],
)
async def test_bad_paging_input_is_invalid(
    make_client: MakeClient, field: str, value: object
) -> None:
    """A limit below 1 or not a number, or a cursor we never gave out, is a 400 invalid_input."""
    client = make_client(frozen_sandbox())
    answer = await client.post("/access_codes/list", json={"device_id": LOCK, field: value})
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_input"
