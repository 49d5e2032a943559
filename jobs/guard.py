"""A scheduled code stays guarded until the stay's end: what a look or an event finds then.

- Looks: every `guard_safety_poll` while Seam's events flow (they wake the stay when something
  happens), every `guard_poll` without them, one confirming look `at_risk_margin` before
  starts_at, and one at ends_at, which ends the chain (`stay.over`).
- A code that breaks (errors, or no longer scheduled on the lock) leaves `scheduled` for
  `waiting_for_device`, and the booking system is told (jobs/records.report_key); it is told
  again when the code is back. A PIN changed at the keypad is told with the new PIN. A code
  deleted outside codeprov is provisioned again, with a new PIN, up to MAX_REPROVISIONS times.
- An event that says the code is on the lock (`scheduled_on_device`, `set_on_device`) marks
  the stay scheduled without a `get`, when nothing in the stored snapshot would need a look to
  be cleared and the event is not older than the last create or update.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from jobs.latency import LATE, Sample
from jobs.state import Phase
from jobs.step import Step, elapsed
from worker.logs import mask_pin

MAX_REPROVISIONS = 3
SCHEDULED_SIGNAL = "scheduled"
ERRORS, NOT_ON_DEVICE = "errors", "not_on_device"  # why a guarded code left `scheduled`
CREATION_MUTATIONS = frozenset({"creating", "deferring_creation"})
CLOCK_SKEW = timedelta(seconds=2)  # Seam's clock against ours, when an event is older than a read


def mark_scheduled(step: Step) -> None:
    """The stay's code is on the lock: `scheduled`, logged once per arrival there."""
    s = step.state
    first = s.scheduled_at is None
    s.state, s.scheduled_at = Phase.SCHEDULED, step.now
    if s.guard_reason in (ERRORS, NOT_ON_DEVICE):
        s.guard_reason = "recovered"
    since = s.programming_since
    if first and since is not None and step.now > since:
        # Ready by this look; needed longer than the last look that saw it pending, if any. A
        # first look that came much later than planned (a busy queue) tells nothing.
        ready_by = (step.now - since).total_seconds()
        pending_for = max(0.0, (s.updated_at - since).total_seconds())
        used = step.expected or step.deps.settings.poll_initial
        if pending_for > 0 or ready_by <= used * LATE:
            step.learned = Sample(ready_by=ready_by, pending_for=pending_for)
    pin = s.code if step.deps.settings.log_pins else mask_pin(s.code)
    step.emit(
        "info",
        "access_code.scheduled",
        access_code_id=s.access_code_id,
        code=pin,
        checks=s.checks,
        elapsed_s=elapsed(s, step.now),
    )
    schedule_guard(step)


def schedule_guard(step: Step) -> None:
    """The next look at a scheduled code: sparse, then once before arrival, then at the end."""
    cfg, s, now = step.deps.settings, step.state, step.now
    every = cfg.guard_safety_poll if step.flowing else cfg.guard_poll
    step.later(every * (1 + cfg.poll_jitter * random.random()))
    starts, ends = s.stay.starts_at, s.stay.ends_at
    if starts is not None:
        confirm = starts - timedelta(seconds=cfg.at_risk_margin)
        if now < confirm - timedelta(seconds=1):
            step.later((confirm - now).total_seconds())
    if ends is not None:
        step.later((ends - now).total_seconds())


def left_scheduled(step: Step, reason: str) -> None:
    """A guarded code broke: back to waiting, logged once; jobs/observe looks again."""
    s = step.state
    s.state, s.guard_reason = Phase.WAITING, reason
    step.emit(
        "warning",
        "access_code.unscheduled",
        access_code_id=s.access_code_id,
        reason=reason,
        errors=sorted(s.errors) or None,
        message="the guest's code is no longer confirmed on the lock",
    )


def pin_changed(step: Step, pin: str | None) -> None:
    """The lock holds another PIN than ours (changed at the keypad): report the new one."""
    s = step.state
    if not pin or not s.code or pin == s.code or s.scheduled_at is None:
        return
    show = (lambda p: p) if step.deps.settings.log_pins else mask_pin
    step.emit(
        "warning",
        "access_code.code_changed",
        access_code_id=s.access_code_id,
        code=show(pin),
        previous_code=show(s.code),
    )
    s.code, s.guard_reason = pin, "code_changed"


def provision_again(step: Step) -> None:
    """The code was deleted outside codeprov before the stay's end: a new code, a new PIN."""
    s = step.state
    gone = s.access_code_id
    step.emit(
        "warning",
        "access_code.deleted_outside",
        access_code_id=gone,
        reprovisions=s.reprovisions + 1,
        message="the code was deleted outside codeprov; provisioning a new one",
    )
    guarded = s.scheduled_at is not None
    s.forget_code()
    s.reprovisions += 1
    s.state = Phase.WAITING if guarded else Phase.QUEUED
    s.guard_reason = "access_code_deleted"
    s.programming_since, s.changed_at = None, step.now  # urgent, with a deadline from now
    step.later(0.0)


def trusted_signal(step: Step) -> bool:
    """Whether Seam's event alone may say the code is on the lock: it said so and nothing else
    since the last step, nothing stored needs a look to clear (the create's own mutation aside:
    a code on the lock has none), and it is not older than the last create, update or read."""
    s = step.state
    kind, occurred = _signal(step)
    if kind != SCHEDULED_SIGNAL or s.to_delete or s.errors or s.warnings:
        return False
    if not set(s.mutations) <= CREATION_MUTATIONS:
        return False
    # Older than the last create or update, or than the last read (a late event about a code
    # that read found broken since): says nothing of the code now.
    floors = [t for t in (s.programming_since, s.looked_at) if t is not None]
    return occurred is not None and all(occurred >= t for t in floors)


def stale_signal(step: Step) -> bool:
    """Whether every event that woke the stay happened before its last read (the feed catching
    up, a late resend): that read saw what they say, so no new one is needed."""
    s = step.state
    kind, occurred = _signal(step)
    if not kind or occurred is None or s.looked_at is None or s.to_delete:
        return False
    return occurred < s.looked_at - CLOCK_SKEW


def _signal(step: Step) -> tuple[str, datetime | None]:
    kind, _, ms = step.signal.partition("|")
    if not ms.isdigit() or len(ms) > 15:
        return kind, None
    return kind, datetime.fromtimestamp(int(ms) / 1000, UTC)
