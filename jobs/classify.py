"""What an error on a code means for the stay: a table, not scattered ifs.

Seam publishes no official split (../shared/SEAM-API.md). TERMINAL lists the codes where Seam
will not fix things by itself: a person or a new PIN is needed, so the stay fails with that
code as its reason. Everything else, including codes we have never seen, is TRANSIENT: we keep
waiting (Seam retries on its side) until the stay's deadline.
"""

from __future__ import annotations

import enum


class Severity(enum.Enum):
    TRANSIENT = "transient"
    TERMINAL = "terminal"


TERMINAL: frozenset[str] = frozenset(
    {
        "code_constraints_violated",
        "duplicate_code_on_device",
        "no_space_for_access_code_on_device",
        "insufficient_permissions",
        "account_disconnected",
        "device_removed",
        "subscription_required",
        "access_code_inactive",
        "missing_device_credentials",
        "duplicate_code_attempt_prevented",
    }
)


# Warnings that are what codeprov asked for, not a problem: logged at info, never as an alert.
# `using_backup_access_code`: the original of a backup we pulled (jobs/backup.py).
EXPECTED_WARNINGS: frozenset[str] = frozenset({"using_backup_access_code"})


def classify(error_code: str) -> Severity:
    return Severity.TERMINAL if error_code in TERMINAL else Severity.TRANSIENT
