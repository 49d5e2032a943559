"""`/access_codes/pull_backup_access_code`: a backup from the lock's pool for a code in trouble.

As Seam documents it: the backup works at once (`status: set`, `starts_at` = the pull,
`ends_at` = the original's), is named `Backup <id> (Seam)`, has its own PIN and `is_backup`;
the original gets `pulled_backup_access_code_id` and the `using_backup_access_code` warning;
pulling again for the same code returns the same backup. Event:
`access_code.backup_access_code_pulled` (`backup_access_code_id`) on the original.
"""

from __future__ import annotations

from typing import Any

from seam_sandbox.codes import AccessCode
from seam_sandbox.errors import SeamError, empty_backup_pool, invalid_input
from seam_sandbox.ratelimit import RateLimiter
from seam_sandbox.state import SandboxState
from seam_sandbox.validation import Params, required_str

# A pulled backup sat on the lock already: Seam never announces its programming.
_ALREADY_ON_THE_LOCK = ("scheduled", "set")


def pull_backup_access_code(
    state: SandboxState, limiter: RateLimiter, params: Params
) -> dict[str, Any]:
    original = state.code(required_str(params, "access_code_id"))
    backup = _backup_of(state, original)
    return {"access_code": state.render(backup), "backup_access_code": state.render(backup)}


def _backup_of(state: SandboxState, original: AccessCode) -> AccessCode:
    if original.pulled_backup_access_code_id is not None:
        earlier = state.codes.get(original.pulled_backup_access_code_id)
        if earlier is None or earlier.gone(state.now(), state.timeline):
            raise SeamError(404, "backup_access_code_not_found", "Backup access code not found")
        return earlier
    if original.is_backup:
        raise invalid_input("access_code_id", "A backup access code has no backup of its own")
    if original.starts_at is None:
        # The type and message of Seam's fake (its docs: time-bound codes only).
        raise SeamError(
            400, "access_code_not_time_bound", "Backups can only be used for time_bound codes."
        )
    pool = state.devices[original.device_id].pool
    if not pool.active:
        raise empty_backup_pool(
            f"No backup access code pool on {original.device_id}: it is turned on by a create "
            "with use_backup_access_code_pool on a lock that supports it"
        )
    if pool.remaining == 0:
        raise empty_backup_pool(f"The backup access code pool of {original.device_id} is empty")
    return _pull(state, original)


def _pull(state: SandboxState, original: AccessCode) -> AccessCode:
    now = state.now()
    state.devices[original.device_id].pool.take(now)
    backup_id = state.new_id()
    backup = AccessCode(
        access_code_id=backup_id,
        device_id=original.device_id,
        workspace_id=original.workspace_id,
        name=f"Backup {backup_id} (Seam)",
        code=state.generate_pin(original.device_id),
        starts_at=state.timeline.at(now),
        ends_at=original.ends_at,
        created=now,
        program_from=now,
        latency=0.0,
        scheduled_at=now,
        is_backup=True,
    )
    state.keep(backup)
    original.pulled_backup_access_code_id, original.pulled_at = backup_id, now
    state.events.record(
        now, "access_code.backup_access_code_pulled", original, backup_access_code_id=backup_id
    )
    state.events.plan(backup, now, skip=_ALREADY_ON_THE_LOCK)
    return backup


ROUTES = {"/access_codes/pull_backup_access_code": pull_backup_access_code}
WRITE_ROUTES = frozenset(ROUTES)
