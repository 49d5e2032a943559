"""A code's coming transitions under its current plan: what `EventLog` emits, and when.

A code's life is planned at creation (and re-planned by update/delete), so its transitions are
known ahead: each is (sandbox second, event type, key). The key makes a transition happen at
most once per code, however often the plan changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from seam_sandbox.codes import AccessCode
from seam_sandbox.faults import DeviceFaults, Timeline

# Order of transitions that fall on the same instant.
_RANK = {
    "access_code.scheduled_on_device": 0,
    "access_code.set_on_device": 1,
    "access_code.delay_in_setting_on_device": 2,
    "access_code.failed_to_set_on_device": 2,
    "access_code.removed_from_device": 3,
    "access_code.deleted": 4,
}
_PROGRAMMING_FAULTS = ("delay_in_setting_on_device", "failed_to_set_on_device")


@dataclass(frozen=True)
class Transition:
    at: float
    event_type: str
    key: str


def delete_requested(code: AccessCode) -> float | None:
    """When `delete` was called on the code (its `deleting` mutation), if it was."""
    return next((m.created for m in code.mutations if m.mutation_code == "deleting"), None)


def removal(code: AccessCode, tl: Timeline) -> float | None:
    """When the code leaves Seam: deleted, or expired at `ends_at` (whichever comes first)."""
    ends = tl.secs(code.ends_at) if code.ends_at is not None else None
    times = [t for t in (code.deleted_at, ends) if t is not None]
    return min(times) if times else None


def planned(code: AccessCode, faults: DeviceFaults, tl: Timeline) -> list[Transition]:
    """Every transition of the code's plan, in the order they happen."""
    gone = removal(code, tl)
    requested = delete_requested(code)
    # Nothing more reaches the device once a delete is asked for (or the code expired).
    cutoff = requested if requested is not None else gone
    out: list[Transition] = []

    def before_cutoff(t: float) -> bool:
        return cutoff is None or t < cutoff

    scheduled = code.scheduled_at
    on_device = scheduled is not None and before_cutoff(scheduled)
    if scheduled is not None and on_device:
        out.append(Transition(scheduled, "access_code.scheduled_on_device", "scheduled"))
        set_at = max(scheduled, tl.secs(code.starts_at)) if code.starts_at else scheduled
        if before_cutoff(set_at):
            out.append(Transition(set_at, "access_code.set_on_device", "set"))
    out.extend(_fault_transitions(code, faults, before_cutoff))
    if gone is not None:
        if on_device:
            out.append(Transition(gone, "access_code.removed_from_device", "removed"))
        out.append(Transition(gone, "access_code.deleted", "deleted"))
    return sorted(out, key=lambda t: (t.at, _RANK[t.event_type]))


def _fault_transitions(
    code: AccessCode, faults: DeviceFaults, before_cutoff: Callable[[float], bool]
) -> list[Transition]:
    """Programming faults that start while the code's creation is under way."""
    out: list[Transition] = []
    pending_until = code.scheduled_at if code.scheduled_at is not None else float("inf")
    for i, fault in enumerate(faults.spec.faults):
        if fault.kind not in _PROGRAMMING_FAULTS:
            continue
        t = max(fault.start, code.program_from)
        if fault.active(t) and t < pending_until and before_cutoff(t):
            out.append(Transition(t, f"access_code.{fault.kind}", f"fault:{i}"))
    if code.terminal_error is not None:
        t = code.program_from + code.latency
        if before_cutoff(t):
            out.append(Transition(t, "access_code.failed_to_set_on_device", "terminal"))
    return out
