"""Every Seam request a worker sends, timestamped and attributed to its stay.

`LoggingTransport` wraps the transport a worker's Seam client uses (in-process: the sandbox's
ASGITransport), so nothing of codeprov changes. A request is attributed to a stay by what it
carries: a create by the code's name (`Stay <booking_id>`), a read or a change by its
access_code_id, a generate_code by the PIN it proposed, which the stay's create then sends.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

NAME_PREFIX = "Stay "  # jobs.payload: a stay's code is named "Stay <booking_id>" by default


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic() when the request left the worker
    route: str
    status: int
    device_id: str | None
    access_code_id: str | None
    name: str | None
    pin: str | None
    answer: dict[str, Any] | None  # the access code (or generated code) answered, if any


@dataclass
class SeamLog:
    calls: list[Call] = field(default_factory=list)

    def by_route(self) -> dict[str, Counter[str]]:
        routes: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for c in self.calls:
            routes[c.route][str(c.status)] += 1
        return {route: counts for route, counts in sorted(routes.items())}

    def per_stay(self) -> tuple[Counter[str], int]:
        """Calls per booking id, and the calls that could not be attributed."""
        booking_of_code: dict[str, str] = {}
        pins: dict[tuple[str, str], str] = {}
        for c in self.calls:
            if c.route == "/access_codes/create" and c.name and c.name.startswith(NAME_PREFIX):
                named = c.name.removeprefix(NAME_PREFIX)
                if c.device_id and c.pin:
                    pins[(c.device_id, c.pin)] = named
                acid = (c.answer or {}).get("access_code_id")
                if acid:
                    booking_of_code[str(acid)] = named
        counts: Counter[str] = Counter()
        unattributed = 0
        for c in self.calls:
            booking = _booking(c, booking_of_code, pins)
            if booking is None:
                unattributed += 1
            else:
                counts[booking] += 1
        return counts, unattributed

    def created(self) -> dict[str, dict[str, Any]]:
        """The access codes created, by id, as Seam answered them."""
        return {
            str(c.answer["access_code_id"]): c.answer
            for c in self.calls
            if c.route == "/access_codes/create" and c.answer and "access_code_id" in c.answer
        }


def _booking(c: Call, codes: dict[str, str], pins: dict[tuple[str, str], str]) -> str | None:
    if c.name and c.name.startswith(NAME_PREFIX):
        return c.name.removeprefix(NAME_PREFIX)
    if c.access_code_id:
        return codes.get(c.access_code_id)
    if c.route == "/access_codes/generate_code" and c.device_id and c.pin:
        return pins.get((c.device_id, c.pin))
    return None


class LoggingTransport(httpx.AsyncBaseTransport):
    """Passes each request on to `inner` and logs it in `log`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, log: SeamLog) -> None:
        self._inner = inner
        self._log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        at = time.monotonic()
        response = await self._inner.handle_async_request(request)
        body = await response.aread()
        self._log.calls.append(_call(at, request, response.status_code, body))
        return httpx.Response(response.status_code, headers=response.headers, content=body,
                              request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _call(at: float, request: httpx.Request, status: int, body: bytes) -> Call:
    sent = _json(request.content)
    answered = _json(body)
    answer = answered.get("access_code") or answered.get("generated_code")
    answer = answer if isinstance(answer, dict) else None
    pin = sent.get("code") or (answer or {}).get("code")
    return Call(
        at=at,
        route=request.url.path,
        status=status,
        device_id=_str(sent.get("device_id")),
        access_code_id=_str(sent.get("access_code_id")),
        name=_str(sent.get("name")),
        pin=_str(pin),
        answer=answer,
    )


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
