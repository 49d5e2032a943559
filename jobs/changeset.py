"""Deciding what a message does to a stay: a pure function of the record and the message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from jobs.payload import Action, Message, Stay
from jobs.state import Phase, StayState


@dataclass(frozen=True)
class Decision:
    result: Literal["enqueued", "duplicate", "invalid"]
    current: StayState | None
    write: StayState | None = None
    tombstone: str | None = None  # value for the cancel-before-provision tombstone
    note: str | None = None
    ignored: bool = False


def decide(current: StayState | None, tomb: bytes | None, msg: Message, now: datetime) -> Decision:
    if current is None:
        return _new(tomb, msg, now)
    if not msg.is_newer_than(current.revision):
        note = f"stale: revision {msg.revision} is not newer than applied {current.revision}"
        return Decision("duplicate", current, note=note, ignored=True)
    if msg.action is Action.CANCEL:
        if current.cancel_requested:
            return Decision("duplicate", current, note="already cancelled")
        return Decision("enqueued", current, write=_cancel(current, msg, now))
    assert msg.stay is not None
    if msg.stay == current.stay and not current.cancel_requested:
        return Decision("duplicate", current, write=_bump_revision(current, msg))
    if msg.action is Action.PROVISION and msg.revision is None:
        return Decision(
            "invalid",
            current,
            note=(
                "booking_id is already enqueued with different device, dates or name: "
                "send action=update (with a newer revision) to change it"
            ),
        )
    return Decision("enqueued", current, write=_change(current, msg.stay, msg, now))


def _new(tomb: bytes | None, msg: Message, now: datetime) -> Decision:
    if tomb is not None:
        cancelled_at = int(tomb) if tomb.strip() else None
        if (
            msg.action is Action.CANCEL
            or not msg.is_newer_than(cancelled_at)
            or (cancelled_at is None and msg.revision is None)
        ):
            return Decision("duplicate", None, note="the booking was cancelled", ignored=True)
    if msg.action is Action.CANCEL:
        return Decision(
            "enqueued",
            None,
            tombstone=str(msg.revision or ""),
            note="cancelled before it was provisioned",
        )
    assert msg.stay is not None
    state = StayState(
        stay=msg.stay,
        revision=msg.revision,
        action=msg.action.value,
        enqueued_at=now,
        updated_at=now,
    )
    return Decision("enqueued", None, write=state)


def _reopen(current: StayState, msg: Message, now: datetime) -> StayState:
    """A copy that a new step will pick up: the running chain's next commit is superseded."""
    s = current.model_copy(deep=True)
    s.seq += 1
    s.revision = msg.revision if msg.revision is not None else s.revision
    s.action = msg.action.value
    s.changed_at = s.updated_at = s.next_check_at = now
    s.failure, s.scheduled_at = None, None
    s.at_risk_logged, s.transient_failures, s.checks, s.pin_conflicts = False, 0, 0, 0
    if s.state.is_final:
        s.state = Phase.WAITING if s.access_code_id else Phase.QUEUED
    return s


def _cancel(current: StayState, msg: Message, now: datetime) -> StayState:
    s = _reopen(current, msg, now)
    s.cancel_requested = True
    return s


def _change(current: StayState, stay: Stay, msg: Message, now: datetime) -> StayState:
    s = _reopen(current, msg, now)
    s.stay, s.cancel_requested, s.previous = stay, False, None
    return s


def _bump_revision(current: StayState, msg: Message) -> StayState | None:
    if msg.revision is None or msg.revision == current.revision:
        return None
    s = current.model_copy(deep=True)
    s.revision = msg.revision
    return s
