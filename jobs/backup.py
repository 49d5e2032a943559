"""Backup codes: a code that will not set in time hands the guest one of the lock's backup PINs.

With `CODEPROV_BACKUP_CODES` on, time-bound codes are created with `use_backup_access_code_pool`
on locks whose device says `supports_backup_access_code_pool` (read with `/devices/get` once per
lock, cached for every worker in `{prefix}:device_props:{device_id}`). When a look at the code
finds `failed_to_set_on_device`, or the code still not scheduled `CODEPROV_AT_RISK_MARGIN` before
`starts_at`, and Seam says `is_backup_access_code_available`, the backup is pulled and becomes
the stay's code: its id and PIN are the stay's, the stay is `scheduled` with `backup: true`. A
backup is already on the lock (Seam programs the pool ahead), so there is nothing to wait for.

The original stays on Seam (with the warning `using_backup_access_code`, expected) and on the
lock once it sets: whenever the stay lets go of its code (cancel, move, new dates:
`drop_on_change`, deleted outside), the original goes on the delete list with it
(`StayState.forget_code`). A pull is safe to retry: Seam answers the same backup for the same
code, so a step whose commit is lost pulls again and only the committed step logs
`access_code.backup_pulled`.
"""

from __future__ import annotations

import json
from datetime import timedelta

from jobs.guard import ERRORS, NOT_ON_DEVICE, schedule_guard
from jobs.state import Applied, CodeRef, Phase
from jobs.step import Step
from worker.deps import Deps
from worker.errors import SeamClientError, SeamNotFound, SeamProtocolError
from worker.logs import mask_pin
from worker.seam_models import AccessCode

DEVICE_PROPS_TTL = 86_400  # a lock's support for the pool does not change; a day bounds a typo
FAILED_TO_SET = "failed_to_set_on_device"
EMPTY_POOL = "empty_backup_access_code_pool"


def device_props_key(prefix: str, device_id: str) -> str:
    """What we read of a lock's `/devices/get` (JSON), shared by every worker."""
    return f"{prefix}:device_props:{device_id}"


async def use_pool(step: Step) -> bool:
    """Whether this stay's create asks for the backup pool: the setting, a time-bound code (Seam
    keeps backups for those only), a lock that supports it."""
    if not step.deps.settings.backup_codes or step.stay.starts_at is None:
        return False
    return await supports_pool(step.deps, step.stay.device_id)


async def supports_pool(deps: Deps, device_id: str) -> bool:
    key = device_props_key(deps.store.prefix, device_id)
    cached = _read_props(await deps.redis.get(key))
    if cached is not None:
        return cached
    device = await deps.seam.get_device(device_id)
    supported = device.properties.supports_backup_access_code_pool is True
    props = json.dumps({"supports_backup_access_code_pool": supported})
    await deps.redis.set(key, props, ex=DEVICE_PROPS_TTL)
    return supported


def _read_props(raw: bytes | str | None) -> bool | None:
    """The cached flag; None when absent or unreadable (then the device is read again)."""
    if raw is None:
        return None
    try:
        props = json.loads(raw)
    except ValueError:
        return None
    value = props.get("supports_backup_access_code_pool") if isinstance(props, dict) else None
    return value if isinstance(value, bool) else None


async def consider(step: Step, code: AccessCode) -> None:
    """After `observe` read the stay's code: pull a backup when the code will not make it."""
    s = step.state
    if not step.deps.settings.backup_codes or s.backup or s.state is not Phase.WAITING:
        return
    if s.to_delete:
        return  # a moved stay is scheduled only once its old code is gone (jobs/observe)
    reason = _reason(step, code)
    if reason is None:
        return
    if not code.is_backup_access_code_available:
        if EMPTY_POOL in s.errors:  # else the lock keeps no pool (or the setting came later)
            _unavailable(step, EMPTY_POOL)
        return
    try:
        backup = await step.deps.seam.pull_backup_access_code(code.access_code_id)
    except SeamNotFound:
        raise  # the original is gone: the pipeline says so
    except SeamClientError as exc:  # e.g. the pool ran out between the read and the pull
        _unavailable(step, exc.error_type or f"seam_http_{exc.status}")
        return
    if not backup.code:
        raise SeamProtocolError("the backup code has no PIN", route="pull_backup_access_code")
    _take(step, code, backup, reason)


def _reason(step: Step, code: AccessCode) -> str | None:
    """Why the code needs a backup now, or None. At risk only after a look past the create's
    answer: a stay enqueued inside the margin first gets its own code's chance."""
    s, starts = step.state, step.state.stay.starts_at
    if code.is_scheduled:
        return None
    if any(e.error_code == FAILED_TO_SET for e in code.errors):
        return FAILED_TO_SET
    margin = timedelta(seconds=step.deps.settings.at_risk_margin)
    if starts is not None and s.checks > 1 and step.now >= starts - margin:
        return "at_risk"
    return None


def _take(step: Step, original: AccessCode, backup: AccessCode, reason: str) -> None:
    s = step.state
    s.backup, s.original_access_code_id = True, original.access_code_id
    s.access_code_id, s.code = backup.access_code_id, backup.code
    # The original's conditions are its own; the backup's are recorded from its next look.
    s.errors, s.warnings, s.mutations = {}, {}, {}
    s.state, s.scheduled_at = Phase.SCHEDULED, step.now
    if s.guard_reason in (ERRORS, NOT_ON_DEVICE):  # a guarded code that broke: back, on a backup
        s.guard_reason = "recovered"
    schedule_guard(step)  # looked after like any scheduled code from now
    pin = s.code if step.deps.settings.log_pins else mask_pin(s.code)
    step.emit(
        "info",
        "access_code.backup_pulled",
        access_code_id=backup.access_code_id,
        original_access_code_id=original.access_code_id,
        reason=reason,
        code=pin,
        checks=s.checks,
    )


def _unavailable(step: Step, why: str) -> None:
    """No backup to hand out: said once per stay; the stay goes on waiting for its code."""
    s = step.state
    if s.backup_unavailable_logged:
        return
    s.backup_unavailable_logged = True
    step.emit(
        "warning",
        "access_code.backup_unavailable",
        access_code_id=s.access_code_id,
        reason=why,
        message="the code is not on the lock and no backup code can be pulled",
    )


def drop_on_change(step: Step) -> None:
    """New dates or name for a stay holding a backup, on the same lock: a backup cannot follow
    (it keeps its original's window), so both codes go on the delete list and the stay gets a
    new code of its own. A move to another lock is `follow_move`'s, which calls `release`."""
    s, target = step.state, Applied.of(step.state.stay)
    was = s.applied
    if not s.backup or was is None or was == target or was.device_id != target.device_id:
        return
    dropped = s.access_code_id
    s.to_delete.append(CodeRef(device_id=was.device_id, access_code_id=dropped, name=was.name))
    s.forget_code()  # which puts the original on the delete list too
    step.emit(
        "info", "access_code.backup_dropped", access_code_id=dropped,
        message="the stay changed: its backup and original codes are removed, a new code made",
    )
