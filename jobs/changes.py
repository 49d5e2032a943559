"""Changes to a stay: dates moved, lock changed, cancelled. The code follows the stay.

Codes to remove are kept in the state (`to_delete`) until Seam confirms they are gone, so a
worker killed between a delete and its record only repeats an idempotent delete (404 = gone).
"""

from __future__ import annotations

from typing import Any

from jobs.observe import schedule_check, watch_removal
from jobs.provision import find_by_name
from jobs.state import Applied, CodeRef, Phase
from jobs.step import Step
from worker.errors import SeamNotFound
from worker.seam_models import AccessCode


async def process_deletions(step: Step) -> None:
    """Ask Seam to delete each code left behind; drop each once Seam confirms it is gone."""
    s = step.state
    remaining: list[CodeRef] = []
    still: list[AccessCode] = []  # the remaining codes as Seam shows them now
    for ref in s.to_delete:
        gone, seen = await _gone(step, ref)
        if not gone:
            remaining.append(ref)
            still += [seen] if seen is not None else []
    s.to_delete = remaining
    if s.cancel_requested and len(still) == len(remaining):
        watch_removal(step, still)  # only when every code was read: none seems cleared
    if remaining:
        schedule_check(step)


async def _gone(step: Step, ref: CodeRef) -> tuple[bool, AccessCode | None]:
    """(gone, the code as Seam shows it when this step read it)."""
    seam = step.deps.seam
    if ref.access_code_id is None:  # created but never recorded: find it by name
        found = await find_by_name(step, ref.device_id, ref.name)
        if found is None:
            return True, None
        ref.access_code_id = found.access_code_id
    try:
        if not ref.delete_sent:
            await seam.delete_access_code(ref.access_code_id, ref.device_id)
            ref.delete_sent = True
            step.emit(
                "info",
                "access_code.delete_requested",
                device_id=ref.device_id,
                access_code_id=ref.access_code_id,
            )
            return False, None  # confirmed on a later check: the lock takes a while
        return False, await seam.get_access_code(ref.access_code_id)
    except SeamNotFound:
        step.emit(
            "info",
            "access_code.removed",
            device_id=ref.device_id,
            access_code_id=ref.access_code_id,
        )
        return True, None


async def cancel(step: Step) -> None:
    """Remove the stay's code (also one whose create may be in flight), then `cancelled`."""
    s = step.state
    _release_current(step)
    await process_deletions(step)
    if s.to_delete:
        s.state = Phase.WAITING
        return
    s.state = Phase.CANCELLED
    step.emit("info", "provisioning.cancelled", revision=s.revision)


def follow_move(step: Step) -> None:
    """The stay moved to another lock: the old code goes on the delete list, provision anew."""
    s = step.state
    on = s.applied.device_id if s.applied else s.requested.device_id if s.requested else None
    if on is None or on == s.stay.device_id or not (s.access_code_id or s.create_sent):
        return
    ref = _release_current(step)
    s.previous = ref
    step.emit(
        "info",
        "access_code.moved",
        from_device_id=on,
        to_device_id=s.stay.device_id,
        previous_access_code_id=ref.access_code_id if ref else None,
    )


def _release_current(step: Step) -> CodeRef | None:
    """Move the current code (recorded, or possibly created) onto the delete list."""
    s = step.state
    if s.access_code_id is None and not s.create_sent:
        return None
    was = s.applied or s.requested or Applied.of(s.stay)
    ref = CodeRef(device_id=was.device_id, access_code_id=s.access_code_id, name=was.name)
    s.to_delete.append(ref)
    s.forget_code()
    return ref


async def apply_update(step: Step) -> bool:
    """Dates or name changed on the same lock: `/access_codes/update`; True if one was sent."""
    s = step.state
    target = Applied.of(s.stay)
    if s.access_code_id is None or s.applied is None or s.applied == target:
        return False
    fields: dict[str, Any] = {}
    if (s.applied.starts_at, s.applied.ends_at) != (target.starts_at, target.ends_at):
        if target.starts_at is None or target.ends_at is None:
            fields["type"] = "ongoing"
        else:
            fields["starts_at"] = target.starts_at.isoformat()
            fields["ends_at"] = target.ends_at.isoformat()
    if s.applied.name != target.name:
        fields["name"] = target.name
    await step.deps.seam.update_access_code(s.access_code_id, s.stay.device_id, **fields)
    s.applied, s.state, s.checks = target, Phase.WAITING, 0
    s.programming_since = step.deps.clock()  # the update's answer: the lock starts now
    step.emit(
        "info",
        "access_code.update_requested",
        access_code_id=s.access_code_id,
        starts_at=fields.get("starts_at"),
        ends_at=fields.get("ends_at"),
        name=fields.get("name"),
    )
    schedule_check(step)
    return True
