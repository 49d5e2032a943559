"""Reading a code's health: transitions to log, scheduled or not, when to look again."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from jobs import guard
from jobs.classify import Severity, classify
from jobs.guard import (
    ERRORS,
    NOT_ON_DEVICE,
    left_scheduled,
    mark_scheduled,
    pin_changed,
    schedule_guard,
)
from jobs.state import Phase, StayState
from jobs.step import Step
from jobs.transitions import Transition, current, diff, snapshot
from worker.seam_models import AccessCode

NEAR_LOOKS = 4  # looks at E·r^k near the expected time, before they spread by FAR_FACTOR
FAR_FACTOR = 1.5
Seen = dict[str, dict[str, tuple[str, datetime]]]  # per kind: condition -> (message, since)


def observe(step: Step, code: AccessCode) -> None:
    s, now = step.state, step.now
    s.checks, s.looked_at = s.checks + 1, now
    pin_changed(step, code.code)
    s.code = code.code or s.code
    seen = current(code, now)
    _record(step, seen, ("error", "warning", "mutation"))
    terminal = sorted(c for c in s.errors if classify(c) is Severity.TERMINAL)
    guarded = s.scheduled_at is not None
    if code.is_scheduled and not s.to_delete and not (guarded and s.errors):
        if s.state is Phase.SCHEDULED:
            schedule_guard(step)  # still fine
        else:
            mark_scheduled(step)
    elif guarded:  # watched till its end: told, never failed by the deadline or an error
        if s.state is Phase.SCHEDULED:
            left_scheduled(step, ERRORS if s.errors else NOT_ON_DEVICE)
        schedule_check(step, code.deferred_until, sparse=step.flowing)
    elif terminal:
        step.fail(
            terminal[0], seen["error"][terminal[0]][0] or "Seam reports an error a person must fix"
        )
    else:
        s.state = Phase.WAITING
        schedule_check(step, code.deferred_until, sparse=step.flowing)


def scheduled_by_event(step: Step) -> bool:
    """Seam's event said the code is on the lock (jobs/guard.trusted_signal): scheduled, or
    still, with no `get`; the create's mutation is logged cleared as a look would. False: a
    look is needed."""
    s = step.state
    if guard.stale_signal(step) and s.state in (Phase.SCHEDULED, Phase.WAITING):
        if s.state is Phase.SCHEDULED:
            schedule_guard(step)
        else:
            schedule_check(step, sparse=step.flowing)
        return True
    if not guard.trusted_signal(step):
        return False
    _record(step, {"error": {}, "warning": {}, "mutation": {}}, ("mutation",))
    if s.state is Phase.SCHEDULED:
        schedule_guard(step)
    else:
        mark_scheduled(step)
    return True


def watch_removal(step: Step, codes: list[AccessCode]) -> None:
    """Log the errors/warnings of a cancelled stay's codes still on the lock as they change.

    `codes`: every code still to remove, as read by this step. A cancelled stay has no current
    code, so its snapshots hold those of the codes being removed (`failed_to_remove_from_device`,
    `delay_in_removing_from_device`, a lock offline...).
    """
    seen: Seen = {"error": {}, "warning": {}}
    owner: dict[str, str] = {}
    for code in codes:
        for kind, found in current(code, step.now).items():
            if kind in seen:
                seen[kind].update(found)
                owner.update(dict.fromkeys(found, code.access_code_id))
    _record(step, seen, ("error", "warning"), owner)


def _record(
    step: Step, seen: Seen, kinds: tuple[str, ...], owner: dict[str, str] | None = None
) -> None:
    """Log what appeared and cleared since the stored snapshots of `kinds`, then store `seen`.

    `owner`: which code each condition is on, when it is not the stay's current code.
    """
    s = step.state
    stored = {"error": s.errors, "warning": s.warnings, "mutation": s.mutations}
    for kind in kinds:
        for t in diff(kind, stored[kind], seen[kind]):
            _log_transition(step, t, (owner or {}).get(t.code))
        stored[kind] = snapshot(seen[kind], stored[kind])
    s.errors, s.warnings, s.mutations = stored["error"], stored["warning"], stored["mutation"]


def _log_transition(step: Step, t: Transition, access_code_id: str | None = None) -> None:
    fields: dict[str, Any] = {
        "access_code_id": access_code_id or step.state.access_code_id,
        f"{t.kind}_code": t.code,
        "message": t.message or None,
    }
    if t.kind == "error":
        fields["severity"] = classify(t.code).value
    if not t.added and t.since is not None:
        fields["duration_s"] = round((step.now - t.since).total_seconds(), 3)
    step.emit(t.level, t.event, **fields)


def schedule_check(
    step: Step, deferred_until: datetime | None = None, *, sparse: bool = False
) -> None:
    """Look again at times from when programming began: E, E·r, E·r², E·r³, then x FAR_FACTOR.

    E is the lock's learned programming time (poll_initial until one is known, jobs/latency.py),
    so most codes are seen scheduled at the first or second look, late by at most (r - 1) of
    their time. Past E·r³ the estimate was wrong (a first code, a lock offline): the looks
    spread faster, so a slow code costs a handful of calls, not dozens.

    `sparse` (Seam's events flow: one wakes the stay when the code changes): no look sooner
    than `safety_poll`, the safety net for an event that never comes.
    """
    cfg, s = step.deps.settings, step.state
    expected = step.expected or cfg.poll_initial
    if deferred_until is not None and deferred_until > step.now:
        # Seam said when it starts loading the code: look then, not every few minutes for weeks.
        s.programming_since = deferred_until
        step.later((deferred_until - step.now).total_seconds() + expected)
        return
    since = s.programming_since or step.now
    gone = (step.now - since).total_seconds()
    wait, looks = expected, 1
    while wait <= gone + 0.05:
        factor = cfg.poll_factor if looks < NEAR_LOOKS else max(cfg.poll_factor, FAR_FACTOR)
        wait = wait * factor if factor > 1 else wait + expected
        looks += 1
    delay = min(wait - gone, cfg.poll_max)
    if sparse:
        delay = max(delay, cfg.safety_poll)
    step.later(delay * (1 + cfg.poll_jitter * random.random()))


def deadline(s: StayState, grace: float) -> datetime:
    """When waiting ends as failed: `grace` after starts_at, enqueue or the last change."""
    start = max(s.stay.starts_at or s.enqueued_at, s.enqueued_at, s.changed_at or s.enqueued_at)
    return start + timedelta(seconds=grace)


def check_deadline(step: Step) -> None:
    s = step.state
    if s.cancel_requested:
        _check_removal(step)
        return
    due = deadline(s, step.deps.settings.schedule_deadline)
    if not _reached(step, due):
        return
    problems = _problems(s)
    if s.to_delete:
        problems += f"; codes still to remove: {_refs(s)}"
    step.fail(
        "not_scheduled_in_time",
        f"the code was not scheduled on the lock by {due.isoformat()} "
        f"(Seam errors/warnings: {problems})",
    )


def removal_deadline(s: StayState, grace: float) -> datetime:
    """When removing a cancelled stay's codes ends as failed: `grace` after the cancel."""
    return (s.changed_at or s.enqueued_at) + timedelta(seconds=grace)


def _check_removal(step: Step) -> None:
    s = step.state
    due = removal_deadline(s, step.deps.settings.schedule_deadline)
    if not s.to_delete or not _reached(step, due):
        return
    step.fail(
        "not_removed_in_time",
        f"Seam did not confirm the removal of {_refs(s)} by {due.isoformat()} "
        f"(Seam errors/warnings: {_problems(s)}); the code may still open the lock",
    )


def _reached(step: Step, due: datetime) -> bool:
    """True once `due` has passed; before, the next look comes no later than `due`."""
    if step.now >= due:
        return True
    if step.next_at is not None and step.next_at > due:
        step.next_at = due  # look once more exactly at the deadline
    return False


def _problems(s: StayState) -> str:
    problems = ", ".join(sorted(s.errors) + sorted(s.warnings)) or "none reported"
    if s.transient_failures and s.last_seam_error:
        problems += f"; Seam itself failing: {s.last_seam_error}"
    return problems


def _refs(s: StayState) -> str:
    """The codes still on the delete list, by id (by name for one created but not recorded)."""
    return ", ".join(
        f"{ref.access_code_id or f'an unrecorded code named {ref.name!r}'} on {ref.device_id}"
        for ref in s.to_delete
    )


def check_at_risk(step: Step) -> None:
    s, margin = step.state, step.deps.settings.at_risk_margin
    if s.cancel_requested:
        _removal_at_risk(step)
        return
    starts = s.stay.starts_at
    if s.at_risk_logged or starts is None:
        return
    if not _reached(step, starts - timedelta(seconds=margin)):
        return  # look again when the stay becomes at risk
    s.at_risk_logged = True
    step.emit(
        "warning",
        "provisioning.at_risk",
        access_code_id=s.access_code_id,
        starts_at=starts.isoformat(),
        errors=sorted(s.errors) or None,
        message="guest arrival is near and the code is not yet on the lock",
    )


def _removal_at_risk(step: Step) -> None:
    """Halfway to the removal deadline, a cancelled stay's code still on the lock: say so once."""
    s = step.state
    grace = step.deps.settings.schedule_deadline
    if s.at_risk_logged or not s.to_delete:
        return
    if not _reached(step, removal_deadline(s, grace / 2)):
        return
    s.at_risk_logged = True
    step.emit(
        "warning",
        "provisioning.removal_at_risk",
        access_code_ids=[ref.access_code_id for ref in s.to_delete],
        errors=sorted(s.errors) or None,
        warnings=sorted(s.warnings) or None,
        deadline=removal_deadline(s, grace).isoformat(),
        message="the cancelled stay's code is not yet confirmed removed from the lock",
    )
