"""One step of a stay: read its state, call Seam, write its state, decide the next check.

A stay advances through a chain of short arq jobs `codeprov:{booking_id}:{seq}`; the state
record holds the seq of the step that should run next. A step that finds another seq is stale
(a re-run after a crash, a duplicate): it only makes sure the expected step is queued. While
the lock is being programmed no job runs at all: the next check is a deferred job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobs.classify import Severity, classify
from jobs.state import Failure, Phase, StayState
from jobs.transitions import Transition, current, diff, snapshot
from worker.deps import Deps
from worker.errors import (
    RateLimitWait,
    SeamClientError,
    SeamConflict,
    SeamError,
    SeamNotFound,
    SeamRateLimited,
    SeamTransientError,
)
from worker.limiter import backoff
from worker.logs import flat, get_logger, mask_pin
from worker.queue import enqueue_step
from worker.seam_models import AccessCode


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    job_try: int = 1


@dataclass
class Step:
    deps: Deps
    state: StayState
    job: JobInfo
    now: datetime
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    next_at: datetime | None = None

    @property
    def stay(self) -> Any:
        return self.state.stay

    def emit(self, level: str, event: str, **fields: Any) -> None:
        self.events.append((level, event, flat(fields)))

    def fail(self, reason: str, message: str) -> None:
        self.state.state = Phase.FAILED
        self.state.failure = Failure(reason=reason, message=message)
        self.emit("error", "provisioning.failed", reason=reason, message=message)

    def later(self, seconds: float) -> None:
        self.next_at = self.now + timedelta(seconds=max(0.0, seconds))


async def advance_stay(deps: Deps, booking_id: str, seq: int, job: JobInfo) -> None:
    log = get_logger(booking_id=booking_id, job_id=job.job_id, job_try=job.job_try)
    state = await deps.store.get(booking_id)
    if state is None:
        log.warning("job.orphaned", message="no state record for this booking; job dropped")
        return
    if state.state.is_final:
        return
    if state.seq != seq:
        if seq < state.seq:  # a re-run after a crash: make sure the chain goes on
            await enqueue_step(
                deps.redis, booking_id, state.seq, delay=_until(state.next_check_at, deps.clock())
            )
        return
    step = Step(deps, state.model_copy(deep=True), job, deps.clock())
    await _run(step)
    await _finish(step, expected_seq=seq)


async def _run(step: Step) -> None:
    s, seam = step.state, step.deps.seam
    try:
        if s.access_code_id is None:
            code = await _provision(step)
            if code is None:
                return
        else:
            code = await seam.get_access_code(s.access_code_id)
        s.transient_failures = 0
        _observe(step, code)
    except RateLimitWait as exc:
        step.later(exc.retry_after)
    except SeamTransientError as exc:
        _transient(step, exc)
    except SeamNotFound as exc:
        _not_found(step, exc)
    except SeamClientError as exc:
        step.fail(exc.error_type or f"seam_http_{exc.status}", _seam_message(exc))


async def _provision(step: Step) -> AccessCode | None:
    s, seam, stay = step.state, step.deps.seam, step.state.stay
    s.state = Phase.PROVISIONING
    if s.create_sent:
        # A create may have reached Seam without us recording it: look before creating again.
        for existing in await seam.list_access_codes(stay.device_id):
            if existing.name == stay.code_name:
                return _adopt(step, existing, adopted=True)
    if s.code is None:
        generated = await seam.generate_code(stay.device_id)
        ready = generated.as_access_code()
        if ready is not None:
            return _adopt(step, ready, adopted=False)
        s.code = generated.code
    return await _create(step)


async def _create(step: Step) -> AccessCode | None:
    s, stay = step.state, step.state.stay
    # Record the intent before the POST: a re-run then looks for the code first.
    s.create_sent = True
    if not await step.deps.store.commit(s, expected_seq=s.seq):
        return None
    try:
        created = await step.deps.seam.create_access_code(
            stay.device_id,
            code=s.code or "",
            name=stay.code_name,
            starts_at=stay.starts_at,
            ends_at=stay.ends_at,
        )
    except RateLimitWait:
        s.create_sent = False  # the limiter held it back: nothing reached Seam
        raise
    except SeamConflict as exc:
        s.pin_conflicts += 1
        s.code, s.create_sent = None, False
        step.emit(
            "warning",
            "access_code.pin_conflict",
            device_id=stay.device_id,
            seam_request_id=exc.request_id,
            attempt=s.pin_conflicts,
        )
        if s.pin_conflicts >= step.deps.settings.max_pin_attempts:
            step.fail("pin_conflicts", f"{s.pin_conflicts} generated PINs were already on the lock")
        step.later(0)
        return None
    return _adopt(step, created, adopted=False)


def _adopt(step: Step, code: AccessCode, *, adopted: bool) -> AccessCode:
    s = step.state
    s.access_code_id = code.access_code_id
    s.code = code.code
    s.state = Phase.WAITING
    step.emit(
        "info",
        "access_code.created",
        device_id=code.device_id,
        access_code_id=code.access_code_id,
        adopted=adopted,
    )
    return code


def _observe(step: Step, code: AccessCode) -> None:
    s, now = step.state, step.now
    s.checks += 1
    s.code = code.code or s.code
    seen = current(code, now)
    snaps = {"error": s.errors, "warning": s.warnings, "mutation": s.mutations}
    for kind, before in snaps.items():
        for t in diff(kind, before, seen[kind]):
            _log_transition(step, t)
    s.errors = snapshot(seen["error"], s.errors)
    s.warnings = snapshot(seen["warning"], s.warnings)
    s.mutations = snapshot(seen["mutation"], s.mutations)
    terminal = sorted(c for c in s.errors if classify(c) is Severity.TERMINAL)
    if code.is_scheduled:
        s.state, s.scheduled_at = Phase.SCHEDULED, now
        step.emit(
            "info",
            "access_code.scheduled",
            access_code_id=code.access_code_id,
            code=s.code if step.deps.settings.log_pins else mask_pin(s.code),
            checks=s.checks,
            elapsed_s=_elapsed(s, now),
        )
    elif terminal:
        msg = seen["error"][terminal[0]][0] or "Seam reports an error a person must fix"
        step.fail(terminal[0], msg)
    else:
        s.state = Phase.WAITING
        _schedule_check(step, code.deferred_until)


def _log_transition(step: Step, t: Transition) -> None:
    fields: dict[str, Any] = {
        "access_code_id": step.state.access_code_id,
        f"{t.kind}_code": t.code,
        "message": t.message or None,
    }
    if t.kind == "error":
        fields["severity"] = classify(t.code).value
    if not t.added and t.since is not None:
        fields["duration_s"] = round((step.now - t.since).total_seconds(), 3)
    step.emit(t.level, t.event, **fields)


def _schedule_check(step: Step, deferred_until: datetime | None) -> None:
    cfg, s = step.deps.settings, step.state
    if deferred_until is not None and deferred_until > step.now:
        # Seam said when it starts loading the code: look then, not every few minutes for weeks.
        step.next_at = deferred_until + timedelta(seconds=cfg.poll_initial)
        return
    step.later(
        backoff(
            s.checks - 1,
            base=cfg.poll_initial,
            cap=cfg.poll_max,
            factor=cfg.poll_factor,
            jitter=cfg.poll_jitter,
        )
    )


def _transient(step: Step, exc: SeamTransientError) -> None:
    s, cfg = step.state, step.deps.settings
    s.transient_failures += 1
    delay = backoff(s.transient_failures - 1, base=1.0, cap=cfg.transient_backoff_max)
    if isinstance(exc, SeamRateLimited) and exc.retry_after is not None:
        delay = max(delay, exc.retry_after)
    step.emit(
        "warning",
        "seam.request_failed",
        route=exc.route,
        status=exc.status,
        error_type=exc.error_type,
        seam_request_id=exc.request_id,
        error=exc.message,
        retry_in_s=round(delay, 3),
        transient_failures=s.transient_failures,
    )
    step.later(delay)


def _not_found(step: Step, exc: SeamNotFound) -> None:
    s = step.state
    if s.access_code_id is None:
        step.fail(exc.error_type or "device_not_found", _seam_message(exc))
    elif s.stay.ends_at is not None and step.now >= s.stay.ends_at:
        step.fail("expired", "the stay ended before its code was confirmed on the lock")
    else:
        step.fail("access_code_deleted", "the access code was deleted outside codeprov")


def _seam_message(exc: SeamError) -> str:
    return str(exc)


def _until(at: datetime | None, now: datetime) -> float:
    return 0.0 if at is None else max(0.0, (at - now).total_seconds())


def _elapsed(s: StayState, now: datetime) -> float:
    return round((now - s.enqueued_at).total_seconds(), 3)


def deadline(s: StayState, grace: float) -> datetime:
    start = max(s.stay.starts_at or s.enqueued_at, s.enqueued_at)
    return start + timedelta(seconds=grace)


async def _finish(step: Step, expected_seq: int) -> None:
    s, cfg = step.state, step.deps.settings
    if not s.state.is_final:
        _check_deadline(step, deadline(s, cfg.schedule_deadline))
    if not s.state.is_final:
        _check_at_risk(step, cfg.at_risk_margin)
    s.updated_at = step.now
    s.next_check_at = None if s.state.is_final else (step.next_at or step.now)
    s.seq = expected_seq + 1
    if not await step.deps.store.commit(s, expected_seq=expected_seq):
        get_logger(booking_id=s.booking_id).info("step.superseded", job_id=step.job.job_id)
        return
    log = get_logger(
        booking_id=s.booking_id,
        device_id=s.stay.device_id,
        job_id=step.job.job_id,
        job_try=step.job.job_try,
    )
    for level, event, fields in step.events:
        fields.setdefault("elapsed_s", _elapsed(s, step.now))
        getattr(log, level)(event, **fields)
    if not s.state.is_final:
        await enqueue_step(
            step.deps.redis, s.booking_id, s.seq, delay=_until(s.next_check_at, step.now)
        )


def _check_deadline(step: Step, due: datetime) -> None:
    s = step.state
    if step.now < due:
        if step.next_at is not None and step.next_at > due:
            step.next_at = due  # look once more exactly at the deadline
        return
    problems = ", ".join(sorted(s.errors) + sorted(s.warnings)) or "none reported"
    step.fail(
        "not_scheduled_in_time",
        f"the code was not scheduled on the lock by {due.isoformat()} "
        f"(Seam errors/warnings: {problems})",
    )


def _check_at_risk(step: Step, margin: float) -> None:
    s = step.state
    starts = s.stay.starts_at
    risk_at = starts - timedelta(seconds=margin) if starts else None
    if risk_at and not s.at_risk_logged and step.next_at and step.next_at > risk_at > step.now:
        step.next_at = risk_at  # look again when the stay becomes at risk
    if s.at_risk_logged or starts is None or step.now < starts - timedelta(seconds=margin):
        return
    s.at_risk_logged = True
    step.emit(
        "warning",
        "provisioning.at_risk",
        access_code_id=s.access_code_id,
        starts_at=starts.isoformat(),
        errors=sorted(s.errors) or None,
        message="guest arrival is near and the code is not yet on the lock",
    )
