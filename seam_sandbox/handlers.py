"""One function per Seam route: `(state, limiter, params) -> answer body` or a `SeamError`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seam_sandbox.errors import invalid_input
from seam_sandbox.ratelimit import RateLimiter
from seam_sandbox.state import SandboxState
from seam_sandbox.validation import (
    CreateInput,
    Params,
    create_input,
    encode_cursor,
    optional_str,
    page_cursor,
    page_limit,
    pin,
    required_str,
    str_list,
    update_input,
)

Handler = Callable[[SandboxState, RateLimiter, Params], dict[str, Any]]


def generate_code(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    device_id = required_str(params, "device_id")
    state.device(device_id)
    if state.scenario.generate_code_shape == "generated_code":
        return {"generated_code": {"device_id": device_id, "code": state.generate_pin(device_id)}}
    # The OpenAPI shape: a full access code, already created and living like a created one.
    limiter.check_device("create", device_id)
    request = CreateInput(device_id, None, None, None, None, None, False, False, True)
    return {"generated_code": state.render(state.create(request))}


def create(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    request = create_input(params, state.clock.now())
    state.device(request.device_id)
    limiter.check_device("create", request.device_id)
    code = state.render(state.create(request))
    # Seam's spec requires the attempt next to the code; it is pending until programmed.
    return {"access_code": code, "action_attempt": _action_attempt(state, "CREATE_ACCESS_CODE")}


def get(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    access_code_id = optional_str(params, "access_code_id")
    if access_code_id is not None:
        return {"access_code": state.render(state.code(access_code_id))}
    device_id, code = optional_str(params, "device_id"), pin(params)
    if device_id is None or code is None:
        raise invalid_input("access_code_id", "Required (or device_id and code)")
    return {"access_code": state.render(state.code_by_pin(device_id, code))}


def list_codes(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    device_id = optional_str(params, "device_id")
    ids = str_list(params, "access_code_ids")
    if device_id is None and ids is None:
        raise invalid_input("device_id", "Required (or access_code_ids)")
    if device_id is not None:
        state.device(device_id)
    limit = page_limit(params, state.scenario.list_page_size)
    after = page_cursor(params)
    codes = [
        c
        for c in state.live_codes(device_id)
        if (ids is None or c.access_code_id in ids) and (after is None or state.ordinal(c) > after)
    ]
    # Pages in creation order; a cursor names the last code given, so codes deleted between
    # pages shift nothing and codes created meanwhile come at the end.
    page, more = codes[:limit], len(codes) > limit
    cursor = encode_cursor(state.ordinal(page[-1])) if more else None
    pagination = {"has_next_page": more, "next_page_cursor": cursor, "next_page_url": None}
    return {"access_codes": [state.render(c) for c in page], "pagination": pagination}


def update(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    code = state.code(required_str(params, "access_code_id"))
    request = update_input(params, (code.starts_at, code.ends_at), state.clock.now())
    limiter.check_device("update", code.device_id)
    state.update(code, request)
    return {"action_attempt": _action_attempt(state, "UPDATE_ACCESS_CODE")}


def delete(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    code = state.code(required_str(params, "access_code_id"))
    limiter.check_device("delete", code.device_id)
    state.delete(code)
    return {"action_attempt": _action_attempt(state, "DELETE_ACCESS_CODE")}


def list_devices(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    wanted = str_list(params, "device_ids")
    devices = [d for d in state.devices.values() if wanted is None or d.spec.id in wanted]
    # Every lock fits one page (the spec requires `pagination` all the same).
    return {"devices": [state.render_device(d) for d in devices], "pagination": _ONE_PAGE}


def get_device(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    return {"device": state.render_device(state.device(required_str(params, "device_id")))}


_ONE_PAGE = {"has_next_page": False, "next_page_cursor": None, "next_page_url": None}


def _action_attempt(state: SandboxState, action_type: str) -> dict[str, Any]:
    return {
        "action_attempt_id": state.new_id(),
        "action_type": action_type,
        "status": "pending",
        "result": None,
        "error": None,
    }


ROUTES: dict[str, Handler] = {
    "/access_codes/generate_code": generate_code,
    "/access_codes/create": create,
    "/access_codes/get": get,
    "/access_codes/list": list_codes,
    "/access_codes/update": update,
    "/access_codes/delete": delete,
    "/devices/list": list_devices,
    "/devices/get": get_device,
}
