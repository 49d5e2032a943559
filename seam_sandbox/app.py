"""The ASGI app: Seam's routes over `SandboxState`, behind auth, outages, rate limits and drops.

A request goes: drop? → auth → outage → per-key limit → parse → slow → handler (validation,
404s, per-device limit, 409s). `/health` and `/_sandbox/*` skip auth and every fault.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from seam_sandbox import backups, event_routes, handlers, multiple
from seam_sandbox.errors import DroppedConnection, SeamError
from seam_sandbox.faults import Chaos
from seam_sandbox.ratelimit import RateLimiter
from seam_sandbox.state import SandboxState
from seam_sandbox.stats import RequestStats

READ_ROUTES = frozenset(
    {
        "/access_codes/generate_code",
        "/access_codes/get",
        "/access_codes/list",
        "/devices/list",
        "/devices/get",
    }
    | event_routes.READ_ROUTES
)
WRITE_ROUTES = (
    frozenset({"/access_codes/create", "/access_codes/update", "/access_codes/delete"})
    | event_routes.WRITE_ROUTES
    | multiple.WRITE_ROUTES
    | backups.WRITE_ROUTES
)
# Methods beyond POST (and GET on reads) that Seam's OpenAPI spec gives a route; its SDK
# updates with PATCH and deletes with DELETE (parameters in the query string).
_MORE_METHODS = {
    "/access_codes/update": frozenset({"PUT", "PATCH"}),
    "/access_codes/delete": frozenset({"DELETE"}),
    "/webhooks/delete": frozenset({"DELETE"}),
} | multiple.MORE_METHODS
LIST_PARAMS = frozenset({"access_code_ids", "device_ids"}) | event_routes.LIST_PARAMS
ROUTES = handlers.ROUTES | event_routes.ROUTES | multiple.ROUTES | backups.ROUTES
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class SeamApp:
    def __init__(
        self,
        state: SandboxState,
        limiter: RateLimiter,
        stats: RequestStats,
        chaos: Chaos,
        stats_view: Callable[[], dict[str, Any]],
        seed: int,
    ) -> None:
        self.state, self.limiter, self.stats, self.chaos = state, limiter, stats, chaos
        self._stats_view = stats_view
        self._request_ids = random.Random(f"{seed}:requests")
        route = Route("/{path:path}", self._endpoint, methods=_METHODS)
        self._starlette = Starlette(routes=[route])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        rule = self.chaos.drop(path) if scope["type"] == "http" and _known(path) else None
        if rule is None:
            await self._starlette(scope, receive, send)
            return
        self.stats.connection_dropped()
        if rule.when == "after":
            await self._starlette(scope, receive, _discard)
        else:
            self.stats.arrived(path)
            self.stats.answered(path, "dropped")
        raise DroppedConnection(f"sandbox dropped the connection on {path}")

    async def _endpoint(self, request: Request) -> Response:
        route = request.url.path
        # The accounting observes clients: its own route stays out of it.
        counted = not route.startswith("/_sandbox/")
        label = route if _known(route) or route == "/health" else "(unknown)"
        if counted:
            self.stats.arrived(label)
        try:
            response = await self._respond(route, request)
        except ClientDisconnect:  # the client went away mid-request: no one to answer
            response = Response(status_code=499)
        except SeamError as exc:
            response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        response.headers["seam-request-id"] = str(
            uuid.UUID(int=self._request_ids.getrandbits(128), version=4)
        )
        if counted:
            self.stats.answered(label, response.status_code)
        return response

    async def _respond(self, route: str, request: Request) -> Response:
        if route == "/_sandbox/stats" and request.method == "GET":
            return JSONResponse(self._stats_view())
        if route == "/health":
            return JSONResponse({"ok": True, "msg": "seam sandbox is up"})
        if not _known(route):
            raise SeamError(404, "not_found", f"No route {route}")
        if request.method not in allowed_methods(route):
            raise SeamError(405, "method_not_allowed", f"{request.method} not allowed on {route}")
        self._authenticate(request)
        outage = self.chaos.outage(self.state.now(), route)
        if outage is not None:
            return _outage_response(*outage)
        self.limiter.check_key()
        params = await _params(request)
        delay = self.chaos.delay(route, self._device_hint(params))
        if delay:
            await anyio.sleep(delay)
        self.state.events.sync(self.state.now())  # events due by now exist before any answer
        body = ROUTES[route](self.state, self.limiter, params)
        _link_next_page(request, params, body)
        return JSONResponse(body | {"ok": True})

    def _authenticate(self, request: Request) -> None:
        expected = f"Bearer {self.state.scenario.api_key}"
        if request.headers.get("authorization") != expected:
            raise SeamError(401, "unauthorized", "Unauthorized")

    def _device_hint(self, params: dict[str, Any]) -> str | None:
        device_id = params.get("device_id")
        if isinstance(device_id, str):
            return device_id
        code = self.state.codes.get(str(params.get("access_code_id")))
        return code.device_id if code else None


def _link_next_page(request: Request, params: dict[str, Any], body: dict[str, Any]) -> None:
    """Fill `pagination.next_page_url`: this route as a GET for the next page (Seam's shape)."""
    pagination = body.get("pagination")
    if not isinstance(pagination, dict) or not pagination.get("next_page_cursor"):
        return
    query = {k: params[k] for k in ("device_id", "limit") if params.get(k) is not None}
    if isinstance(params.get("access_code_ids"), list):
        query["access_code_ids"] = ",".join(params["access_code_ids"])
    query["page_cursor"] = pagination["next_page_cursor"]
    pagination["next_page_url"] = str(request.url.replace(query=urlencode(query)))


def allowed_methods(route: str) -> frozenset[str]:
    """The HTTP methods Seam accepts on `route`."""
    reads = frozenset({"GET"}) if route in READ_ROUTES else frozenset()
    return frozenset({"POST"}) | reads | _MORE_METHODS.get(route, frozenset())


def _known(route: str) -> bool:
    return route in READ_ROUTES or route in WRITE_ROUTES


async def _discard(message: Message) -> None:
    """Swallows the answer of a request whose connection is dropped after it took effect."""


async def _params(request: Request) -> dict[str, Any]:
    if request.method == "GET" or (request.method == "DELETE" and request.query_params):
        params: dict[str, Any] = {}
        for key, value in request.query_params.multi_items():
            if key.removesuffix("[]") in LIST_PARAMS:
                params.setdefault(key.removesuffix("[]"), []).extend(
                    v for v in value.split(",") if v
                )
            else:
                params[key] = value
        return params
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SeamError(400, "invalid_input", "Unparsable JSON body") from None
    if not isinstance(parsed, dict):
        raise SeamError(400, "invalid_input", "The JSON body must be an object")
    return parsed


def _outage_response(status: int, seam_body: bool) -> Response:
    if not seam_body:
        return Response(status_code=status)
    error = SeamError(status, "service_unavailable", "Seam is temporarily unavailable")
    return JSONResponse(error.body(), status_code=status)
