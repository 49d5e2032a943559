"""A lock's backup access code pool: whether it is on, how many backups are left, what it shows.

Seam turns a device's pool on at the first create (or update) with `use_backup_access_code_pool`
on a lock whose `properties.supports_backup_access_code_pool` is true, and never off; every
time-bound code of that lock can then pull a backup. Seam refills the pool after a pull; the
sandbox does not, so `DeviceSpec.backup_pool_size` backups can be pulled in all and a test can
reach `empty_backup_access_code_pool`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seam_sandbox.codes import AccessCode
from seam_sandbox.faults import Timeline, issue

EMPTY_POOL = "empty_backup_access_code_pool"


@dataclass
class BackupPool:
    supported: bool
    remaining: int
    activated_at: float | None = None
    empty_since: float | None = None  # when the last backup was pulled (or the pool came empty)

    @property
    def active(self) -> bool:
        return self.activated_at is not None

    def activate(self, now: float) -> None:
        """Turn the pool on (once; unsupported locks ignore it, as the code is made anyway)."""
        if self.supported and self.activated_at is None:
            self.activated_at = now
            if self.remaining == 0:
                self.empty_since = now

    def take(self, now: float) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.empty_since = now

    def available_for(self, code: AccessCode) -> bool:
        """`is_backup_access_code_available`: a pull for this code would give a backup."""
        if not self.active or code.is_backup or code.starts_at is None:
            return False
        return self.remaining > 0 or code.pulled_backup_access_code_id is not None

    def errors(self, tl: Timeline) -> list[dict[str, Any]]:
        """The device error an exhausted pool shows (on the device and, copied, its codes)."""
        if self.empty_since is None:
            return []
        return [issue(EMPTY_POOL, tl.iso(self.empty_since))]
