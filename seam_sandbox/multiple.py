"""`/access_codes/create_multiple` and `/access_codes/update_multiple`: one PIN on several locks.

Without `code`, the codes get one generated PIN and share a new `common_code_key`; with a custom
`code` every lock gets it and `common_code_key` stays null (Seam's docs). A lock that cannot take
the shared PIN (its lengths, a PIN already on it): `behavior_when_code_cannot_be_shared: throw`
(the default) creates nothing and answers that lock's refusal; `create_random_code` gives that
lock a random PIN of its own, outside the group (null `common_code_key`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from seam_sandbox import pins
from seam_sandbox.errors import (
    SeamError,
    access_code_not_found,
    code_constraints_violated,
    invalid_input,
)
from seam_sandbox.ratelimit import RateLimiter
from seam_sandbox.state import SandboxState
from seam_sandbox.validation import (
    CreateInput,
    Params,
    create_input,
    optional_str,
    required_str,
    str_list,
    update_input,
)

_BEHAVIOURS = ("throw", "create_random_code")


def create_multiple(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    device_ids = _device_ids(params)
    behaviour = optional_str(params, "behavior_when_code_cannot_be_shared") or "throw"
    if behaviour not in _BEHAVIOURS:
        raise invalid_input("behavior_when_code_cannot_be_shared", f"One of {_BEHAVIOURS}")
    requests = [create_input(params, state.clock.now(), device_id=d) for d in device_ids]
    specs = [state.device(d).spec for d in device_ids]
    custom = requests[0].code
    shared = custom or _shared_pin(state, device_ids, _preferred_length(params))
    key = None if custom else f"auto_set_by_create_multiple_{state.new_id()}"
    refusals = {d: _refusal(state, d, shared) for d in device_ids}
    if behaviour == "throw" and any(refusals.values()):
        raise next(r for r in refusals.values() if r is not None)
    for device_id in device_ids:
        limiter.check_device("create", device_id)
    made = []
    for req, spec in zip(requests, specs, strict=True):
        fits = refusals[spec.id] is None
        pin, group = (shared, key) if fits else (None, None)
        made.append(state.create(_with(req, pin, group)))
    return {"access_codes": [state.render(c) for c in made]}


def update_multiple(state: SandboxState, limiter: RateLimiter, params: Params) -> dict[str, Any]:
    key = required_str(params, "common_code_key")
    group = [c for c in state.live_codes() if c.common_code_key == key]
    if not group:
        raise access_code_not_found(f"common_code_key {key}")
    # Only the fields Seam documents for this route; each code completes a partial time frame
    # from its own, as /access_codes/update does.
    fields = {k: params[k] for k in ("name", "starts_at", "ends_at") if k in params}
    now = state.clock.now()
    updates = [update_input(fields | {"access_code_id": c.access_code_id},
                            (c.starts_at, c.ends_at), now) for c in group]  # fmt: skip
    for code in group:
        limiter.check_device("update", code.device_id)
    for code, req in zip(group, updates, strict=True):
        state.update(code, req)
    return {}


def _device_ids(params: Params) -> list[str]:
    device_ids = str_list(params, "device_ids")
    if not device_ids:
        raise invalid_input("device_ids", "Required: at least one device id")
    if len(set(device_ids)) != len(device_ids):
        raise invalid_input("device_ids", "Each device at most once")
    return device_ids


def _preferred_length(params: Params) -> int | None:
    value = params.get("preferred_code_length")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_input("preferred_code_length", "Expected number")
    return int(value)


def _shared_pin(state: SandboxState, device_ids: list[str], preferred: int | None) -> str | None:
    """A PIN every lock takes and none holds, or None when their lengths have none in common."""
    specs = [state.device(d).spec for d in device_ids]
    length = pins.shared_length(specs, preferred)
    if length is None:
        return None
    held = frozenset(c.code for d in device_ids for c in state.live_codes(d))
    held |= frozenset(p for s in specs for p in s.taken_pins)
    return state.generate_pin(device_ids[0], length, avoid=held)


def _refusal(state: SandboxState, device_id: str, pin: str | None) -> SeamError | None:
    spec = state.device(device_id).spec
    if pin is None:  # no length fits every lock
        return code_constraints_violated(device_id, sorted(pins.lengths(spec)))
    return pins.refusal(spec, pin, (c.code for c in state.live_codes(device_id)))


def _with(req: CreateInput, pin: str | None, key: str | None) -> CreateInput:
    return replace(req, code=pin, common_code_key=key)


ROUTES = {
    "/access_codes/create_multiple": create_multiple,
    "/access_codes/update_multiple": update_multiple,
}
WRITE_ROUTES = frozenset(ROUTES)
# Seam's spec: create_multiple also takes PUT (what its Python SDK sends), update_multiple PATCH.
MORE_METHODS = {
    "/access_codes/create_multiple": frozenset({"PUT"}),
    "/access_codes/update_multiple": frozenset({"PATCH"}),
}
