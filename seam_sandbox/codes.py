"""The access code: its life planned at creation, rendered lazily at any sandbox instant.

Instants (`program_from`, `scheduled_at`, mutation `done`) are sandbox seconds since start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from seam_sandbox.faults import DeviceFaults, Timeline, iso, issue

_MUTATION_MESSAGES = {
    "creating": "Creating access code on the device",
    "deferring_creation": "Waiting to program the code until closer to starts_at",
    "updating_time_frame": "Updating the time frame on the device",
    "updating_name": "Updating the name on the device",
    "updating_code": "Updating the code on the device",
    "deleting": "Deleting access code from the device",
}


# An update's `from` and `to` (the changed fields before and after), as Seam renders them.
Change = tuple[dict[str, Any], dict[str, Any]]


@dataclass
class Mutation:
    """An update or delete in flight: pending from `created` until `done`."""

    mutation_code: str
    created: float
    done: float
    change: Change | None = None  # updates only

    def render(self, tl: Timeline) -> dict[str, Any]:
        entry = _mutation(self.mutation_code, tl.iso(self.created))
        if self.change is not None:
            entry |= {"from": self.change[0], "to": self.change[1]}
        return entry


@dataclass
class AccessCode:
    access_code_id: str
    device_id: str
    workspace_id: str
    name: str | None
    code: str
    starts_at: datetime | None
    ends_at: datetime | None
    created: float
    program_from: float  # when Seam starts programming (later than `created` when deferred)
    latency: float  # programming time of the creation, before fault pauses
    scheduled_at: float | None  # None: never (a terminal error)
    terminal_error: str | None = None
    common_code_key: str | None = None
    is_one_time_use: bool = False
    is_external_modification_allowed: bool = False
    mutations: list[Mutation] = field(default_factory=list)
    deleted_at: float | None = None
    is_backup: bool = False  # pulled from the lock's backup pool
    pulled_backup_access_code_id: str | None = None  # the backup pulled for this code
    pulled_at: float | None = None

    def gone(self, now: float, tl: Timeline) -> bool:
        """Removed from Seam: deleted, or past `ends_at` (Seam deletes expired codes)."""
        if self.deleted_at is not None and now >= self.deleted_at:
            return True
        return self.ends_at is not None and now >= tl.secs(self.ends_at)

    def scheduled(self, now: float) -> bool:
        return self.scheduled_at is not None and now >= self.scheduled_at

    def creation_pending(self, now: float) -> bool:
        return self.program_from <= now and not self.scheduled(now)

    def render(self, now: float, tl: Timeline, faults: DeviceFaults) -> dict[str, Any]:
        errors, warnings = faults.issues(now, self.creation_pending(now), tl)
        if self.terminal_error and now >= self.program_from + self.latency:
            errors.append(issue(self.terminal_error, tl.iso(self.program_from + self.latency)))
        if self.pulled_at is not None:
            warnings.append(issue("using_backup_access_code", tl.iso(self.pulled_at), warning=True))
        return {
            "access_code_id": self.access_code_id,
            "device_id": self.device_id,
            "workspace_id": self.workspace_id,
            "name": self.name,
            "code": self.code,
            "common_code_key": self.common_code_key,
            "type": "ongoing" if self.starts_at is None else "time_bound",
            "status": self._status(now, tl),
            "starts_at": iso(self.starts_at) if self.starts_at else None,
            "ends_at": iso(self.ends_at) if self.ends_at else None,
            "created_at": tl.iso(self.created),
            "errors": errors,
            "warnings": warnings,
            "pending_mutations": self._pending(now, tl),
            "is_scheduled_on_device": self.scheduled(now),
            "is_managed": True,
            "is_waiting_for_code_assignment": False,
            "is_one_time_use": self.is_one_time_use,
            "is_offline_access_code": False,
            "is_external_modification_allowed": self.is_external_modification_allowed,
            "is_backup_access_code_available": False,  # the pool's to say (state.render)
            "is_backup": self.is_backup,
            "pulled_backup_access_code_id": self.pulled_backup_access_code_id,
        }

    def _status(self, now: float, tl: Timeline) -> str:
        if self.deleted_at is not None:
            return "removing"
        if self.scheduled(now):
            if self.starts_at is not None and now < tl.secs(self.starts_at):
                return "unset"
            return "set"
        return "unset" if now < self.program_from else "setting"

    def _pending(self, now: float, tl: Timeline) -> list[dict[str, Any]]:
        pending: list[dict[str, Any]] = []
        if self.deleted_at is not None:
            pass  # a code being deleted is no longer waiting to be created
        elif now < self.program_from:
            entry = _mutation("deferring_creation", tl.iso(self.created))
            pending.append(entry | {"scheduled_at": tl.iso(self.program_from)})
        elif not self.scheduled(now):
            pending.append(_mutation("creating", tl.iso(self.program_from)))
        pending.extend(m.render(tl) for m in self.mutations if now < m.done)
        return pending


def _mutation(code: str, created_at: str) -> dict[str, Any]:
    return {"mutation_code": code, "message": _MUTATION_MESSAGES[code], "created_at": created_at}
