"""The parts a stay record is made of, and the results-stream entry built from one.

Split from `jobs/state.py`, which keeps the record (`StayState`) and its store; import these
from either module.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from jobs.payload import Stay

if TYPE_CHECKING:
    from jobs.state import StayState


class Phase(enum.StrEnum):
    QUEUED = "queued"
    PROVISIONING = "provisioning"
    WAITING = "waiting_for_device"
    SCHEDULED = "scheduled"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """An outcome the booking system is told of. A scheduled stay is still guarded."""
        return self in (Phase.SCHEDULED, Phase.FAILED, Phase.CANCELLED)


class Failure(BaseModel):
    model_config = ConfigDict(frozen=True)
    reason: str
    message: str


class CodeRef(BaseModel):
    """A code codeprov put on a lock and must remove (a moved or cancelled stay)."""

    device_id: str
    access_code_id: str | None = None  # None: created but never recorded; found by name
    name: str
    delete_sent: bool = False


class Applied(BaseModel):
    """What the current code on Seam was last set to: a change is what differs from this."""

    model_config = ConfigDict(frozen=True)
    device_id: str
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    name: str

    @classmethod
    def of(cls, stay: Stay) -> Applied:
        return cls(
            device_id=stay.device_id,
            starts_at=stay.starts_at,
            ends_at=stay.ends_at,
            name=stay.code_name,
        )


class Slot(BaseModel):
    """A create token reserved on the lock's budget (`Limiter.reserve`): this stay sends at `at`."""

    model_config = ConfigDict(frozen=True)
    device_id: str
    at: datetime


def report_key(state: StayState) -> str | None:
    """What the booking system is to know of the stay now; a commit whose key differs from the
    one last reported (`StayState.reported`) adds a results entry. None: nothing to tell.

    A stay leaving `scheduled` (a guarded code broke) is told once; a change (`_reopen`)
    clears `reported`, so the outcome after each applied change is told again.
    """
    if state.over:
        return state.reported  # the stay is over: Seam removes the code, nothing to tell
    if state.state is Phase.FAILED:
        return f"failed:{state.failure.reason if state.failure else ''}"
    if state.state is Phase.CANCELLED:
        return "cancelled"
    if state.state is Phase.SCHEDULED:
        pin = hashlib.sha256((state.code or "").encode()).hexdigest()[:12]
        return f"scheduled:{state.access_code_id}:{pin}"
    if (state.reported or "").startswith("scheduled:"):
        return Phase.WAITING.value
    return None


def result_entry(state: StayState) -> dict[Any, Any]:
    """One results-stream entry. The PIN is included only once the code is scheduled."""
    entry: dict[Any, Any] = {
        "booking_id": state.stay.booking_id,
        "device_id": state.stay.device_id,
        "state": state.state.value,
        "access_code_id": state.access_code_id or "",
        "at": state.updated_at.isoformat(),
        "action": state.action,
    }
    if state.revision is not None:
        entry["revision"] = state.revision
    if state.previous is not None:
        entry["previous_device_id"] = state.previous.device_id
        entry["previous_access_code_id"] = state.previous.access_code_id or ""
    if state.state is Phase.SCHEDULED and state.code:
        entry["code"] = state.code
    if state.backup:
        entry["backup"] = "true"
    if state.stay.starts_at and state.stay.ends_at:
        entry["starts_at"] = state.stay.starts_at.isoformat()
        entry["ends_at"] = state.stay.ends_at.isoformat()
    if state.failure:
        entry["failure_reason"] = state.failure.reason
        entry["failure_message"] = state.failure.message
    if state.scheduled_at is not None and state.guard_reason:
        entry["reason"] = state.guard_reason  # why a guarded stay is told of again
    if state.errors:
        entry["errors"] = ",".join(sorted(state.errors))
    if state.warnings:
        entry["warnings"] = ",".join(sorted(state.warnings))
    return entry
