"""Getting a code onto the lock: adopt the stay's code if it exists, else generate and create.

A stay never gets two codes: the intent to create is recorded before the POST, and a step that
finds that intent without a recorded code looks for the code before creating again: by its PIN
(`/access_codes/get {device_id, code}`, one call however many codes the lock holds), its name
checked. Whatever is adopted keeps what was asked of it as `applied`; the pipeline sends an
update when that is not what the stay says now (a change that landed while the create was out).
"""

from __future__ import annotations

import math
from datetime import timedelta

import anyio

from jobs.backup import use_pool
from jobs.group import shared_pin
from jobs.state import Applied, Phase, Slot
from jobs.step import Step
from worker.errors import (
    RateLimitWait,
    SeamClientError,
    SeamConflict,
    SeamError,
    SeamRateLimited,
)
from worker.limiter import RESERVE_SLACK_MS, Operation
from worker.logs import get_logger
from worker.seam_models import AccessCode


async def provision(step: Step) -> AccessCode | None:
    s, seam, stay = step.state, step.deps.seam, step.state.stay
    s.state = Phase.PROVISIONING
    if s.create_sent:
        # A create may have reached Seam without us recording it: look before creating again.
        found = await find_own_code(step)
        if found is not None:
            return adopt(step, found, adopted=True)
    pool = await use_pool(step)  # cached per lock: at most one /devices/get per lock a day
    if not await _take_turn(step):
        return None
    if s.code is None and s.part and not s.pin_conflicts:
        shared = await shared_pin(step)  # one PIN on every lock of the stay: the first lock's
        if shared is None:
            return None  # the first lock has none yet: back shortly, the turn kept
        s.code, s.pin_shared = shared or None, bool(shared)
    if s.code is None:
        generated = await seam.generate_code(stay.device_id)
        ready = generated.as_access_code()
        if ready is not None:
            return await _adopt_generated(step, ready)
        s.code = generated.code
    return await _create(step, pool)


async def _adopt_generated(step: Step, ready: AccessCode) -> AccessCode | None:
    """A server whose generate_code made the code itself: record it at once, as a create's
    answer is recorded before anything else; a stay changed or cancelled meanwhile gets no
    code it does not know of, so the code is deleted again."""
    seen = Applied(  # what the code holds is what its fields say
        device_id=ready.device_id,
        starts_at=ready.starts_at,
        ends_at=ready.ends_at,
        name=ready.name or "",  # none: the update that follows names it
    )
    step.state.create_slot = None  # nothing to create: the turn goes unused
    adopt(step, ready, adopted=False, applied=seen)
    if await step.checkpoint():
        return ready
    try:
        await step.deps.seam.delete_access_code(ready.access_code_id, ready.device_id)
    except SeamError as exc:
        get_logger(booking_id=step.state.stay.booking_id).error(
            "access_code.orphaned", device_id=ready.device_id,
            access_code_id=ready.access_code_id, error=str(exc),
            message="a code generate_code made for a stay changed meanwhile could not be "
                    "deleted: remove it on the lock",
        )
    return None


async def _take_turn(step: Step) -> bool:
    """Hold this stay's own turn on the lock's create budget; True once it has come.

    Stays waiting on one lock each reserve the next free slot, so they come back one by one
    instead of all at once to race for one token. The PIN is generated only when the turn has
    come: a PIN fetched long before its create is likelier to be taken meanwhile.
    """
    s, stay, deps = step.state, step.state.stay, step.deps
    if s.create_slot is not None and _late(step, s.create_slot):
        s.create_slot = None  # used now, it would crowd the turns after it: take a new one
    if s.create_slot is None or s.create_slot.device_id != stay.device_id:
        # Urgent stays take a turn however far; the others only within the horizon, so the
        # turns handed out stay few and an urgent stay arriving later is not behind all of them.
        within = math.inf if s.is_urgent(step.now) else deps.settings.create_turn_horizon
        wait = await deps.limiter.reserve(Operation.CREATE, stay.device_id, within=within)
        # From now, not the step's start: the calls before this one took time.
        s.create_slot = Slot(device_id=stay.device_id, at=deps.clock() + timedelta(seconds=wait))
    wait = (s.create_slot.at - deps.clock()).total_seconds()
    if wait > deps.settings.rate_max_sleep:
        # The slot is kept in the state; the worker slot is freed meanwhile. Back a little
        # early, to sleep the rest: a job picked up late would use its turn late.
        ahead = (s.create_slot.at - step.now).total_seconds()
        step.later(ahead - deps.settings.rate_max_sleep / 2)
        return False
    if wait > 0:
        await anyio.sleep(wait)
    return True


def _late(step: Step, slot: Slot) -> bool:
    """Whether a reserved turn used now would come too late to keep the lock's create budget.

    Reserved slots lie one interval plus RESERVE_SLACK_MS-ish apart, so Seam's minute holds
    `count` slacks of spare time; a turn later than half of that lands on its successors' and
    lets one create too many into a minute (Seam's 429). Such a turn is given up.
    """
    per_minute = step.deps.settings.device_creates_per_minute
    interval_ms = 60_000 / per_minute
    slack_ms = min(RESERVE_SLACK_MS, int(interval_ms) // 50)
    tolerance = per_minute * slack_ms / 2000
    return (step.deps.clock() - slot.at).total_seconds() > tolerance


async def find_own_code(step: Step) -> AccessCode | None:
    """The code the last create of this stay put on the lock, if it landed.

    By PIN when one was sent (every create sends one); the name must match too, or the PIN is
    another code's and ours never landed (the create then gets a 409 and a new PIN).
    """
    s = step.state
    asked = s.requested or Applied.of(s.stay)
    if s.code is None:
        return await find_by_name(step, asked.device_id, asked.name)
    found = await step.deps.seam.find_access_code(asked.device_id, s.code)
    return found if found is not None and found.name == asked.name else None


async def find_by_name(step: Step, device_id: str, name: str) -> AccessCode | None:
    """The lock's code named `name`, looking through every page of the lock's codes."""
    for existing in await step.deps.seam.list_access_codes(device_id):
        if existing.name == name:
            return existing
    return None


async def _create(step: Step, pool: bool) -> AccessCode | None:
    s, stay = step.state, step.state.stay
    # A retry keeps the PIN it sent before: if that create landed late, Seam answers 409 and
    # we adopt it, instead of a second code with another PIN.
    retry, asked_before = s.create_sent, s.requested
    # Record the intent before the POST; a cancel committed before this point wins (CAS). The
    # turn is used up by this attempt: a crash from here on reserves a new one.
    slot, s.create_slot = s.create_slot, None
    # A turn that came late (the PIN's call waited) spends the device's token like any request.
    reserved = slot is not None and not _late(step, slot)
    s.create_sent, s.requested = True, Applied.of(stay)
    if not await step.checkpoint():
        return None
    try:
        created = await step.deps.seam.create_access_code(
            stay.device_id, code=s.code or "", name=stay.code_name,
            starts_at=stay.starts_at, ends_at=stay.ends_at, reserved=reserved,
            use_backup_pool=pool,
        )
    except RateLimitWait:
        # Held back by the workspace budget: keep the turn; a late one is lost meanwhile.
        s.create_sent, s.create_slot = retry, slot if reserved else None
        raise
    except SeamRateLimited:
        s.create_sent = retry  # refused by Seam's limit: nothing created
        raise
    except SeamConflict as exc:
        landed = await find_own_code(step) if retry else None
        if landed is not None:  # the earlier create: it holds what that one asked for
            return adopt(step, landed, adopted=True, applied=asked_before)
        _pin_conflict(step, exc)
        return None
    except SeamClientError as exc:
        if not s.pin_shared or exc.error_type != "code_constraints_violated":
            raise
        _pin_conflict(step, exc)  # the lock takes no PIN like the first lock's: one of its own
        return None
    return adopt(step, created, adopted=False)


def _pin_conflict(step: Step, exc: SeamClientError) -> None:
    s = step.state
    s.pin_conflicts += 1
    shared, s.pin_shared = s.pin_shared, False
    s.code, s.create_sent, s.requested = None, False, None
    step.emit("warning", "access_code.pin_conflict", device_id=s.stay.device_id,
              seam_request_id=exc.request_id, attempt=s.pin_conflicts,
              shared_pin=shared or None, error_type=exc.error_type)
    if s.pin_conflicts >= step.deps.settings.max_pin_attempts:
        step.fail("pin_conflicts", f"{s.pin_conflicts} generated PINs were already on the lock")
    step.later(0)


def adopt(
    step: Step, code: AccessCode, *, adopted: bool, applied: Applied | None = None
) -> AccessCode:
    s = step.state
    s.access_code_id = code.access_code_id
    s.code = code.code or s.code
    s.state = Phase.WAITING
    s.programming_since = step.deps.clock()  # the create's answer: the lock starts now
    # What the create asked for (Seam may round times in its echo: never compare with those).
    s.applied = applied or s.requested or Applied.of(s.stay)
    s.requested = None  # `applied` holds it now; a waiting stay's record stays small
    step.emit(
        "info",
        "access_code.created",
        device_id=code.device_id,
        access_code_id=code.access_code_id,
        adopted=adopted,
    )
    return code
