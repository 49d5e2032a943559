"""Deciding what a message does to a stay: a pure function of the record and the message.

The applied revision only moves forward: a message that changes nothing but carries a newer
revision still records it, so an older message arriving later is stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from jobs.payload import Action, Message, Stay
from jobs.state import Phase, StayState

# Failures after which the stay's code is known to be gone from Seam: a retry provisions anew.
CODE_GONE = frozenset({"access_code_deleted", "expired"})


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
        # A cancel whose removal failed (not_removed_in_time) is tried again by a new cancel.
        if current.cancel_requested and current.state is not Phase.FAILED:
            write = _bump_revision(current, msg)
            return Decision("duplicate", current, write=write, note="already cancelled")
        return Decision("enqueued", current, write=_cancel(current, msg, now))
    assert msg.stay is not None
    if msg.stay == current.stay and not current.cancel_requested and not _retry(current, msg):
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


def _retry(current: StayState, msg: Message) -> bool:
    """A failed stay is retried by an update, or by any message with a newer revision."""
    return current.state is Phase.FAILED and (
        msg.action is Action.UPDATE or msg.revision is not None
    )


def _new(tomb: bytes | None, msg: Message, now: datetime) -> Decision:
    if tomb is not None and (cancelled := _cancelled(tomb, msg)) is not None:
        return cancelled
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


def _cancelled(tomb: bytes, msg: Message) -> Decision | None:
    """The answer for a booking cancelled before it was seen; None: the message goes ahead."""
    text = tomb.strip()
    if text and not text.isdigit():
        note = f"stored cancel of booking {msg.booking_id!r} is invalid: not a revision"
        return Decision("invalid", None, note=note)
    cancelled_at = int(text) if text else None
    if msg.action is Action.CANCEL and msg.revision is not None and msg.is_newer_than(cancelled_at):
        # Record the newer cancel's revision: a provision older than it is then stale too.
        return Decision("duplicate", None, tombstone=str(msg.revision), note="already cancelled")
    if (
        msg.action is Action.CANCEL
        or not msg.is_newer_than(cancelled_at)
        or (cancelled_at is None and msg.revision is None)
    ):
        return Decision("duplicate", None, note="the booking was cancelled", ignored=True)
    return None


def _reopen(current: StayState, msg: Message, now: datetime) -> StayState:
    """A copy that a new step will pick up: the running chain's next commit is superseded."""
    s = current.model_copy(deep=True)
    s.seq += 1
    s.revision = msg.revision if msg.revision is not None else s.revision
    s.action = msg.action.value
    s.changed_at = s.updated_at = s.next_check_at = now
    if s.failure is not None and s.failure.reason in CODE_GONE:
        s.forget_code()
    if s.state is Phase.FAILED:
        # A removal that failed (not_removed_in_time) starts over: its DELETE is sent again,
        # the lock may have lost the first one while offline (Seam answers 404 if it is gone).
        for ref in s.to_delete:
            ref.delete_sent = False
    s.failure, s.scheduled_at, s.over = None, None, False
    s.reported = s.guard_reason = None  # the outcome of this change is told again
    s.reprovisions = 0
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
