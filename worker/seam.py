"""Our thin Seam client, on httpx.

Why not the official `seam` SDK's AsyncSeam: it retries inside the client (those retries would
bypass our shared rate limiter), raises its own exception types, and hides `seam-request-id`
and `Retry-After`. Here every request, retries included, first takes a token from the shared
limiter, and every answer is read in one place (`worker.seam_answers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from worker.errors import (
    SeamConnectionError,
    SeamError,
    SeamNotFound,
    SeamProtocolError,
    SeamRateLimited,
)
from worker.limiter import Limiter, Operation, backoff
from worker.logs import get_logger
from worker.seam_answers import (
    json_body,
    next_page_cursor,
    parse,
    parse_item,
    raise_for_answer,
    request_id,
)
from worker.seam_models import AccessCode, Device, GeneratedCode

# How long a 429 on a write pauses the whole workspace (its device waits out all of the pause).
WRITE_429_PAUSE = 1.0


class SeamClient:
    def __init__(
        self,
        endpoint: str,
        api_key: str,
        *,
        limiter: Limiter,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._limiter = limiter
        self._penalties = 0  # consecutive 429s seen by this client: grows the shared pause
        self.answered = 0  # successful answers: one after a workspace outage means it is over
        self._http = httpx.AsyncClient(
            base_url=endpoint,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def generate_code(self, device_id: str) -> GeneratedCode:
        body = await self._call("/access_codes/generate_code", {"device_id": device_id})
        return parse(GeneratedCode, body, "generated_code", "/access_codes/generate_code")

    async def create_access_code(
        self,
        device_id: str,
        *,
        code: str,
        name: str,
        starts_at: datetime | None,
        ends_at: datetime | None,
        reserved: bool = False,
        use_backup_pool: bool = False,
    ) -> AccessCode:
        """`reserved`: the device's create token was reserved (`Limiter.reserve`) and is due.
        `use_backup_pool`: ask Seam to keep backup codes for this one (time-bound codes only)."""
        payload: dict[str, Any] = {"device_id": device_id, "code": code, "name": name}
        if use_backup_pool:
            payload["use_backup_access_code_pool"] = True
        # Each bound on its own: a half time frame must be Seam's 400, never an ongoing code.
        if starts_at is not None:
            payload["starts_at"] = starts_at.isoformat()
        if ends_at is not None:
            payload["ends_at"] = ends_at.isoformat()
        body = await self._call(
            "/access_codes/create", payload, Operation.CREATE, device_id, reserved=reserved
        )
        return parse(AccessCode, body, "access_code", "/access_codes/create")

    async def get_access_code(self, access_code_id: str) -> AccessCode:
        body = await self._call("/access_codes/get", {"access_code_id": access_code_id})
        return parse(AccessCode, body, "access_code", "/access_codes/get")

    async def pull_backup_access_code(self, access_code_id: str) -> AccessCode:
        """The backup code Seam hands out for a code that will not set (one from the lock's
        pool, already on it). Safe to retry: a second pull for one code returns the same backup.

        Seam's docs show the answer under `backup_access_code`, its SDKs read `access_code`:
        whichever holds the backup (`is_backup`, or at least not the original) is taken.
        """
        route = "/access_codes/pull_backup_access_code"
        body = await self._call(route, {"access_code_id": access_code_id})
        for field in ("backup_access_code", "access_code"):
            if isinstance(body.get(field), dict):
                found = parse(AccessCode, body, field, route)
                if found.is_backup or (found.is_backup is None
                                       and found.access_code_id != access_code_id):
                    return found
        raise SeamProtocolError("answer lacks the backup access code", route=route)

    async def get_device(self, device_id: str) -> Device:
        body = await self._call("/devices/get", {"device_id": device_id})
        return parse(Device, body, "device", "/devices/get")

    async def find_access_code(self, device_id: str, code: str) -> AccessCode | None:
        """The lock's code with this PIN (`/access_codes/get {device_id, code}`), or None.

        One call whatever the number of codes on the lock, unlike a paged list.
        """
        route = "/access_codes/get"
        try:
            body = await self._call(route, {"device_id": device_id, "code": code})
        except SeamNotFound:
            return None
        found = parse(AccessCode, body, "access_code", route)
        # A server that ignored either filter could answer another code: that is not a match.
        return found if (found.device_id, found.code) == (device_id, code) else None

    async def list_access_codes(self, device_id: str) -> list[AccessCode]:
        """Every code on the lock: all pages, each one request (and one limiter token)."""
        route = "/access_codes/list"
        codes: list[AccessCode] = []
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            payload = {"device_id": device_id} | ({"page_cursor": cursor} if cursor else {})
            body = await self._call(route, payload)
            items = body.get("access_codes")
            if not isinstance(items, list):
                raise SeamProtocolError("answer lacks the list 'access_codes'", route=route)
            codes += [parse_item(AccessCode, item, route) for item in items]
            cursor = next_page_cursor(body, route)
            if cursor is None:
                break
            if cursor in seen:  # a server that loops would page for ever
                raise SeamProtocolError("pagination repeats a page_cursor", route=route)
            seen.add(cursor)
        # Seam's fake ignores the device_id filter: filter here too.
        return [c for c in codes if c.device_id == device_id]

    async def list_events(
        self, since: datetime, *, limit: int = 500, offset: int = 0, until: datetime | None = None
    ) -> list[Any]:
        """One page of the workspace's events from `since` (inclusive), or `between` since and
        `until`: Seam has no cursor, only `limit` and `unstable_offset`. Items are returned as
        Seam sent them (the caller validates each: one bad event must not lose the page)."""
        route = "/events/list"
        payload: dict[str, Any] = (
            {"since": since.isoformat(), "limit": limit}
            if until is None
            else {"between": [since.isoformat(), until.isoformat()], "limit": limit}
        )
        if offset:
            payload["unstable_offset"] = offset
        body = await self._call(route, payload)
        items = body.get("events")
        if not isinstance(items, list):
            raise SeamProtocolError("answer lacks the list 'events'", route=route)
        return items

    async def update_access_code(self, access_code_id: str, device_id: str, **fields: Any) -> None:
        payload = {"access_code_id": access_code_id, **fields}
        await self._call("/access_codes/update", payload, Operation.UPDATE, device_id)

    async def delete_access_code(self, access_code_id: str, device_id: str) -> None:
        payload = {"access_code_id": access_code_id}
        await self._call("/access_codes/delete", payload, Operation.DELETE, device_id)

    async def _call(
        self,
        route: str,
        payload: Mapping[str, Any],
        operation: Operation = Operation.READ,
        device_id: str | None = None,
        *,
        reserved: bool = False,
    ) -> dict[str, Any]:
        await self._limiter.acquire(operation, device_id, reserved=reserved)
        try:
            response = await self._http.post(route, json=dict(payload))
            if response.status_code != 429:
                self._penalties = 0
        except (httpx.TransportError, OSError) as exc:
            # In-process (ASGITransport) a dropped connection surfaces as a raw OSError.
            raise SeamConnectionError(
                f"no answer from Seam: {type(exc).__name__}", route=route
            ) from None
        body = json_body(response, route)
        if response.is_success:
            if body is None:
                raise SeamProtocolError(
                    "answer is not a JSON object",
                    status=response.status_code,
                    request_id=request_id(response),
                    route=route,
                )
            self.answered += 1
            return body
        try:
            raise_for_answer(response, body, route)
        except SeamRateLimited as exc:
            await self._share_penalty(exc, operation, device_id)
            raise
        raise AssertionError("unreachable")

    async def _share_penalty(
        self, exc: SeamRateLimited, operation: Operation, device_id: str | None
    ) -> None:
        self._penalties += 1
        pause = (
            exc.retry_after
            if exc.retry_after is not None
            else backoff(min(self._penalties, 6) - 1, base=1.0, cap=30.0, jitter=0.5)
        )
        scope = device_id if operation is not Operation.READ else None
        if scope is not None:
            # Seam does not say which budget a write's 429 is about, and our device buckets
            # already keep to its per-device limits: pause the device for all of it and every
            # worker briefly, or the next writes to other devices each earn a 429 of their own.
            await self._limiter.penalize(scope, pause)
        await self._limiter.penalize(None, pause if scope is None else min(pause, WRITE_429_PAUSE))
        get_logger().warning(
            "seam.rate_limited",
            route=exc.route,
            device_id=scope,
            retry_after_s=exc.retry_after,
            pause_s=round(pause, 3),
            seam_request_id=exc.request_id,
        )


__all__ = ["SeamClient", "SeamError"]
