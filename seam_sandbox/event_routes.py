"""`/events/list|get` and `/webhooks/create|list|get|delete`, shaped as `handlers.py`'s routes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from seam_sandbox.errors import SeamError, invalid_input
from seam_sandbox.events import Event
from seam_sandbox.ratelimit import RateLimiter
from seam_sandbox.state import SandboxState
from seam_sandbox.validation import (
    Params,
    optional_str,
    page_limit,
    required_str,
    str_list,
    timestamp,
)

Handler = Callable[[SandboxState, RateLimiter, Params], dict[str, Any]]
DEFAULT_EVENTS_LIMIT = 500  # Seam's spec default for /events/list
# (single filter, list filter, event field) of /events/list
_FILTERS = (
    ("event_type", "event_types", "event_type"),
    ("access_code_id", "access_code_ids", "access_code_id"),
    ("device_id", "device_ids", "device_id"),
    ("connected_account_id", None, "connected_account_id"),
    (None, "event_ids", "event_id"),
)


def list_events(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    """Events in occurred_at order (ties: emission order); `since` inclusive, `between` not."""
    low, high, inclusive = _interval(state, params)
    wanted = _filters(params)
    limit = page_limit(params, DEFAULT_EVENTS_LIMIT)
    offset = _offset(params)
    found = _matching(state.events.between(low, high, inclusive), wanted)
    return {"events": found[offset : offset + limit]}


def get_event(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    event = state.events.get(required_str(params, "event_id"))
    if event is None:
        raise SeamError(404, "event_not_found", f"Event not found: {params['event_id']}")
    return {"event": event}


def create_webhook(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    hook = state.webhooks.create(required_str(params, "url"), str_list(params, "event_types"))
    return {"webhook": hook.render()}


def list_webhooks(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    return {"webhooks": [h.render() for h in state.webhooks.all()]}


def get_webhook(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    return {"webhook": state.webhooks.get(required_str(params, "webhook_id")).render()}


def delete_webhook(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    state.webhooks.delete(required_str(params, "webhook_id"))
    return {}


def _interval(state: SandboxState, params: Params) -> tuple[float, float | None, bool]:
    between = params.get("between")
    if between is not None:
        if not isinstance(between, list) or len(between) != 2:
            raise invalid_input("between", "Expected two timestamps")
        moments = [timestamp({"between": v}, "between") for v in between]
        low, high = (_secs(state, m) for m in moments)
        return low, high, False
    since = timestamp(params, "since")
    if since is None:
        raise invalid_input("since", "Required (or between)")
    return _secs(state, since), None, True


def _secs(state: SandboxState, moment: datetime | None) -> float:
    assert moment is not None  # timestamp() returns None only for a missing value
    return state.timeline.secs(moment)


def _filters(params: Params) -> list[tuple[str, set[str]]]:
    wanted: list[tuple[str, set[str]]] = []
    for single, many, field in _FILTERS:
        values: set[str] = set()
        given = False
        if single is not None and (one := optional_str(params, single)) is not None:
            values.add(one)
            given = True
        if many is not None and (several := str_list(params, many)) is not None:
            values.update(several)
            given = True
        if given:
            wanted.append((field, values))
    return wanted


def _matching(events: Iterable[Event], wanted: list[tuple[str, set[str]]]) -> list[Event]:
    return [e for e in events if all(e.get(field) in values for field, values in wanted)]


def _offset(params: Params) -> int:
    value = params.get("unstable_offset", 0)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise invalid_input("unstable_offset", "Expected number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise invalid_input("unstable_offset", "Expected a number of at least 0")
    return int(min(value, 10**9))


ROUTES: dict[str, Handler] = {
    "/events/list": list_events,
    "/events/get": get_event,
    "/webhooks/create": create_webhook,
    "/webhooks/list": list_webhooks,
    "/webhooks/get": get_webhook,
    "/webhooks/delete": delete_webhook,
}
READ_ROUTES = frozenset({"/events/list", "/events/get", "/webhooks/list", "/webhooks/get"})
WRITE_ROUTES = frozenset({"/webhooks/create", "/webhooks/delete"})
LIST_PARAMS = frozenset({"event_types", "access_code_ids", "device_ids", "event_ids", "between"})
