"""Health transitions of a code: what appeared and what cleared since the last recorded check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jobs.classify import EXPECTED_WARNINGS, Severity, classify
from worker.seam_models import AccessCode


@dataclass(frozen=True)
class Transition:
    kind: str  # "error" | "warning" | "mutation"
    code: str
    added: bool
    message: str = ""
    since: datetime | None = None  # on clear: when the condition was first recorded

    @property
    def event(self) -> str:
        return f"access_code.{self.kind}.{'added' if self.added else 'cleared'}"

    @property
    def level(self) -> str:
        if not self.added:
            return "info"
        if self.kind == "error":
            return "error" if classify(self.code) is Severity.TERMINAL else "warning"
        expected = self.kind == "warning" and self.code in EXPECTED_WARNINGS
        return "warning" if self.kind == "warning" and not expected else "info"


Snapshot = dict[str, datetime]


def current(code: AccessCode, now: datetime) -> dict[str, dict[str, tuple[str, datetime]]]:
    """Per kind: condition code -> (message, since)."""
    return {
        "error": {e.error_code: (e.message, e.created_at or now) for e in code.errors},
        "warning": {w.warning_code: (w.message, w.created_at or now) for w in code.warnings},
        "mutation": {
            m.mutation_code: (m.message, m.created_at or now) for m in code.pending_mutations
        },
    }


def diff(
    kind: str, before: Snapshot, now_seen: dict[str, tuple[str, datetime]]
) -> list[Transition]:
    added = [
        Transition(kind, c, True, message=msg)
        for c, (msg, _) in sorted(now_seen.items())
        if c not in before
    ]
    cleared = [
        Transition(kind, c, False, since=since)
        for c, since in sorted(before.items())
        if c not in now_seen
    ]
    return added + cleared


def snapshot(now_seen: dict[str, tuple[str, datetime]], before: Snapshot) -> Snapshot:
    """Keep the first-seen time of conditions that persist, so `cleared` reports the whole span."""
    return {c: before.get(c, since) for c, (_, since) in now_seen.items()}
