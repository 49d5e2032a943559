"""Our Seam client against our sandbox AND Seam's own fake: same calls, same observable results.

Where the two servers disagree, a test pins what each one does (a dict keyed by server name)
and docs/conformance.md records which one Seam's docs side with.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from redis.asyncio import Redis
from seam_servers import MakeClient, SandboxServer, Server

from worker.errors import (
    SeamConflict,
    SeamError,
    SeamInvalidInput,
    SeamNotFound,
    SeamTransientError,
    SeamUnauthorized,
    SeamUnavailable,
)
from worker.limiter import Budgets, Limiter, Rate
from worker.seam import SeamClient
from worker.seam_models import AccessCode

pytestmark = pytest.mark.anyio

SANDBOX_ONLY = pytest.mark.parametrize("server", ["sandbox"], indirect=True)
FAKE_ONLY = pytest.mark.parametrize("server", ["seam_fake"], indirect=True)
# Known disagreements, decided in docs/conformance.md.
NOT_FOUND_TYPE = {"sandbox": "access_code_not_found", "seam_fake": "not_found"}
SENDS_SCHEDULING_FIELDS = {"sandbox": True, "seam_fake": False}
FILTERS_LIST_BY_DEVICE = {"sandbox": True, "seam_fake": False}
DELETES_AT_ONCE = {"sandbox": False, "seam_fake": True}

# Seam's fake lives for the whole session: every code gets its own PIN so none collide.
_pins = itertools.count(300_001)
_PLUS_TWO = timezone(timedelta(hours=2))


def new_pin() -> str:
    return str(next(_pins))


def stay(days_ahead: int = 30, nights: int = 2) -> tuple[datetime, datetime]:
    """A future stay on whole hours (Seam may round times; whole hours are left alone)."""
    start = (datetime.now(UTC) + timedelta(days=days_ahead)).replace(
        minute=0, second=0, microsecond=0
    )
    return start, start + timedelta(days=nights)


async def create(
    seam: SeamClient, device_id: str, pin: str | None = None, name: str = "contract"
) -> AccessCode:
    starts_at, ends_at = stay()
    return await seam.create_access_code(
        device_id, code=pin or new_pin(), name=name, starts_at=starts_at, ends_at=ends_at
    )


async def outcome_of(call: Awaitable[object]) -> object:
    """What the call returned, or the SeamError it raised."""
    try:
        return await call
    except SeamError as error:
        return error


async def error_of(call: Awaitable[object]) -> SeamError:
    with pytest.raises(SeamError) as caught:
        await call
    return caught.value


# -- the happy path ------------------------------------------------------------------------


async def test_generate_code_proposes_a_pin(seam: SeamClient, server: Server) -> None:
    """generate_code proposes a 4-12 digit PIN for a seeded lock, in the real API's shape."""
    generated = await seam.generate_code(server.device_id)
    assert generated.code.isdigit() and 4 <= len(generated.code) <= 12
    assert generated.device_id == server.device_id
    assert generated.as_access_code() is None  # {device_id, code}: nothing created yet


async def test_generate_code_in_openapi_shape_is_a_code_to_poll(redis: Redis) -> None:
    """The OpenAPI shape (a full access code) reads as a code to poll (sandbox only)."""
    server = SandboxServer(generate_code_shape="access_code")
    seam = server.client(Limiter(redis, Budgets(Rate(1000, 1, 100), {})))
    try:
        generated = await seam.generate_code(server.device_id)
    finally:
        await seam.aclose()
    adopted = generated.as_access_code()
    assert adopted is not None and adopted.device_id == server.device_id
    assert adopted.code == generated.code


async def test_create_then_get_returns_the_same_code(seam: SeamClient, server: Server) -> None:
    """A created code reads back with the same PIN, name and (UTC-normalised) time frame."""
    starts_at, ends_at = stay()
    pin = new_pin()
    created = await seam.create_access_code(
        server.device_id,
        code=pin,
        name="Stay B1",
        starts_at=starts_at.astimezone(_PLUS_TWO),
        ends_at=ends_at.astimezone(_PLUS_TWO),
    )
    got = await seam.get_access_code(created.access_code_id)
    assert (got.access_code_id, got.device_id) == (created.access_code_id, server.device_id)
    assert (got.code, got.name, got.type) == (pin, "Stay B1", "time_bound")
    assert (got.starts_at, got.ends_at) == (starts_at, ends_at)


async def test_list_holds_the_code_and_only_that_device(seam: SeamClient, server: Server) -> None:
    """Listing a lock returns the code created on it and no code of another lock."""
    mine = await create(seam, server.device_id)
    theirs = await create(seam, server.other_device_id)
    listed = await seam.list_access_codes(server.device_id)
    ids = {c.access_code_id for c in listed}
    assert mine.access_code_id in ids and theirs.access_code_id not in ids
    assert {c.device_id for c in listed} == {server.device_id}


async def test_deleted_code_is_not_found(seam: SeamClient, server: Server) -> None:
    """Once a delete has gone through, getting the code is a SeamNotFound."""
    code = await create(seam, server.device_id)
    await seam.delete_access_code(code.access_code_id, server.device_id)
    server.settle()
    error = await error_of(seam.get_access_code(code.access_code_id))
    assert isinstance(error, SeamNotFound) and error.status == 404


async def test_code_being_deleted_differs(seam: SeamClient, server: Server) -> None:
    """Right after delete the sandbox shows `removing` + `deleting`; Seam's fake has no code."""
    code = await create(seam, server.device_id)
    await seam.delete_access_code(code.access_code_id, server.device_id)
    outcome = await outcome_of(seam.get_access_code(code.access_code_id))
    assert isinstance(outcome, SeamNotFound) is DELETES_AT_ONCE[server.name]
    if isinstance(outcome, AccessCode):
        assert outcome.status == "removing"
        assert "deleting" in {m.mutation_code for m in outcome.pending_mutations}


async def test_fresh_code_is_read_by_what_the_server_reports(
    seam: SeamClient, server: Server
) -> None:
    """A fresh code: pending `creating` on the sandbox; on the fake (no scheduling fields) its
    status decides, and a time-bound `unset` code counts as loaded (older Seam semantics)."""
    code = await create(seam, server.device_id)
    if code.reports_scheduling:
        assert not code.is_scheduled
    else:
        assert (code.status, code.type, code.is_scheduled) == ("unset", "time_bound", True)


async def test_scheduling_fields_come_from_the_sandbox_only(
    seam: SeamClient, server: Server
) -> None:
    """Only the sandbox sends pending_mutations and is_scheduled_on_device (Seam's spec does)."""
    code = await create(seam, server.device_id)
    sent = {"pending_mutations", "is_scheduled_on_device"} <= code.model_fields_set
    assert sent is SENDS_SCHEDULING_FIELDS[server.name]


# -- errors --------------------------------------------------------------------------------


async def test_wrong_api_key_is_unauthorized(make_client: MakeClient, server: Server) -> None:
    """A wrong API key is a SeamUnauthorized 401 of type `unauthorized`."""
    seam = make_client(api_key="seam_wrongkey_token")
    error = await error_of(seam.generate_code(server.device_id))
    assert isinstance(error, SeamUnauthorized)
    assert (error.status, error.error_type) == (401, "unauthorized")


@SANDBOX_ONLY
async def test_short_pin_is_invalid_input(seam: SeamClient, server: Server) -> None:
    """A 2-digit PIN is a SeamInvalidInput 400 (Seam's spec: 4-12 digits)."""
    error = await error_of(create(seam, server.device_id, pin="12"))
    assert isinstance(error, SeamInvalidInput)
    assert (error.status, error.error_type) == (400, "invalid_input")


@FAKE_ONLY
async def test_seam_fake_accepts_a_short_pin(seam: SeamClient, server: Server) -> None:
    """Seam's fake does not validate PINs: it stores "12" (the real API answers 400)."""
    code = await create(seam, server.device_id, pin="12")
    assert code.code == "12"
    await seam.delete_access_code(code.access_code_id, server.device_id)


async def test_lone_starts_at_is_invalid_input(seam: SeamClient, server: Server) -> None:
    """A start without an end is a SeamInvalidInput 400, never an ongoing code."""
    starts_at, _ = stay()
    outcome = await outcome_of(
        seam.create_access_code(
            server.device_id, code=new_pin(), name="half", starts_at=starts_at, ends_at=None
        )
    )
    assert isinstance(outcome, SeamInvalidInput) and outcome.status == 400, outcome


async def test_servers_reject_a_lone_starts_at(server: Server) -> None:
    """Both servers answer 400 invalid_input to a create with starts_at and no ends_at."""
    starts_at, _ = stay()
    body = {"device_id": server.device_id, "code": new_pin(), "starts_at": starts_at.isoformat()}
    async with server.http() as http:
        answer = await http.post("/access_codes/create", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_input"


async def test_unknown_code_is_not_found(seam: SeamClient, server: Server) -> None:
    """Getting an unknown code id is a SeamNotFound 404 (its type differs by server)."""
    error = await error_of(seam.get_access_code("no_such_access_code"))
    assert isinstance(error, SeamNotFound)
    assert (error.status, error.error_type) == (404, NOT_FOUND_TYPE[server.name])


async def test_create_on_unknown_device_is_not_found(seam: SeamClient) -> None:
    """Creating a code on an unknown lock is a SeamNotFound 404 `device_not_found`."""
    error = await error_of(create(seam, "no_such_device"))
    assert isinstance(error, SeamNotFound)
    assert (error.status, error.error_type) == (404, "device_not_found")


async def test_generate_code_on_unknown_device_is_not_found(seam: SeamClient) -> None:
    """generate_code for an unknown lock is a SeamNotFound 404 `device_not_found`."""
    error = await error_of(seam.generate_code("no_such_device"))
    assert isinstance(error, SeamNotFound)
    assert (error.status, error.error_type) == (404, "device_not_found")


async def test_same_pin_twice_on_a_lock_is_a_conflict(seam: SeamClient, server: Server) -> None:
    """A second code with the same PIN on the same lock is a SeamConflict 409."""
    first = await create(seam, server.device_id)
    error = await error_of(create(seam, server.device_id, pin=first.code, name="again"))
    assert isinstance(error, SeamConflict)
    assert (error.status, error.error_type) == (409, "duplicate_access_code")


async def test_same_pin_on_another_lock_is_allowed(seam: SeamClient, server: Server) -> None:
    """The duplicate check is per lock: the same PIN on a second lock is created."""
    first = await create(seam, server.device_id)
    second = await create(seam, server.other_device_id, pin=first.code)
    assert (second.code, second.device_id) == (first.code, server.other_device_id)


async def test_errors_carry_the_seam_request_id(
    seam: SeamClient, make_client: MakeClient, server: Server
) -> None:
    """Every 4xx error keeps the answer's seam-request-id."""
    taken = await create(seam, server.device_id)
    errors = [
        await error_of(make_client(api_key="seam_wrongkey_token").generate_code(server.device_id)),
        await error_of(create(seam, "no_such_device")),
        await error_of(seam.get_access_code("no_such_access_code")),
        await error_of(create(seam, server.device_id, pin=taken.code)),
    ]
    assert [e.status for e in errors] == [401, 404, 404, 409]
    assert all(e.request_id for e in errors)


async def test_outage_503_is_retryable(seam: SeamClient, server: Server) -> None:
    """A 503 with an empty body during an outage is a retryable SeamUnavailable."""
    with server.outage("/access_codes/generate_code"):
        error = await error_of(seam.generate_code(server.device_id))
    assert isinstance(error, SeamUnavailable) and isinstance(error, SeamTransientError)
    assert error.retryable and error.status == 503 and error.request_id


# -- what the servers answer before our client reads it --------------------------------------


async def test_raw_list_filtering_differs(seam: SeamClient, server: Server) -> None:
    """The sandbox filters /access_codes/list by device_id; Seam's fake ignores the filter."""
    theirs = await create(seam, server.other_device_id)
    async with server.http() as http:
        answer = await http.post("/access_codes/list", json={"device_id": server.device_id})
    listed = {c["access_code_id"] for c in answer.json()["access_codes"]}
    assert (theirs.access_code_id not in listed) is FILTERS_LIST_BY_DEVICE[server.name]


# -- finding a code: by PIN, and through every page ------------------------------------------

SENDS_PAGINATION = {"sandbox": True, "seam_fake": False}


async def test_get_by_device_and_pin_finds_the_code(seam: SeamClient, server: Server) -> None:
    """`/access_codes/get {device_id, code}` finds the lock's code with that PIN; an unused PIN,
    or the PIN on another lock, is None."""
    mine = await create(seam, server.device_id, name="Stay P1")
    found = await seam.find_access_code(server.device_id, mine.code or "")
    assert found is not None
    assert (found.access_code_id, found.name) == (mine.access_code_id, "Stay P1")
    assert await seam.find_access_code(server.device_id, new_pin()) is None
    assert await seam.find_access_code(server.other_device_id, mine.code or "") is None


async def test_raw_list_pagination_differs(seam: SeamClient, server: Server) -> None:
    """The sandbox answers /access_codes/list with Seam's `pagination`; Seam's fake sends none
    (our client reads a missing `pagination` as the only page)."""
    await create(seam, server.device_id)
    async with server.http() as http:
        answer = await http.post("/access_codes/list", json={"device_id": server.device_id})
    body = answer.json()
    assert ("pagination" in body) is SENDS_PAGINATION[server.name]
    if "pagination" in body:
        assert set(body["pagination"]) == {"has_next_page", "next_page_cursor", "next_page_url"}


async def test_list_reads_every_page(seam: SeamClient, server: Server) -> None:
    """Listing a lock returns every code created on it, however the server pages."""
    created = [await create(seam, server.device_id) for _ in range(3)]
    listed = {c.access_code_id for c in await seam.list_access_codes(server.device_id)}
    assert {c.access_code_id for c in created} <= listed


async def test_list_follows_the_cursor(redis: Redis) -> None:
    """On a sandbox that lists two codes a page, five codes come back from three pages, each
    page one request (sandbox only: Seam's fake does not page)."""
    server = SandboxServer(list_page_size=2)
    seam = server.client(Limiter(redis, Budgets(Rate(1000, 1, 100), {})))
    try:
        created = [await create(seam, server.device_id) for _ in range(5)]
        listed = await seam.list_access_codes(server.device_id)
    finally:
        await seam.aclose()
    assert [c.access_code_id for c in listed] == [c.access_code_id for c in created]
    assert server.sandbox.stats()["requests"]["/access_codes/list"] == {"200": 3}
