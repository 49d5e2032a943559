"""Where the events feed reads from: `since`, and a backward window after newest-first pages.

Seam has no cursor and does not document the order of `/events/list`; these small values say
what one poll read (`Seen`) and what is left to read backwards (`Window`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime


def window_key(prefix: str) -> str:
    """A backward read in progress (JSON: `until`, `resume`), after newest-first pages."""
    return f"{prefix}:events:window"


@dataclass
class Seen:
    """The occurred_at times one poll read, in the order Seam listed them."""

    first: datetime | None = None
    last: datetime | None = None
    oldest: datetime | None = None
    newest: datetime | None = None

    def add(self, at: datetime | None) -> None:
        if at is None:
            return
        self.first = self.first or at
        self.last = at
        self.oldest = at if self.oldest is None else min(self.oldest, at)
        self.newest = at if self.newest is None else max(self.newest, at)

    @property
    def newest_first(self) -> bool:
        return self.first is not None and self.last is not None and self.first > self.last


@dataclass(frozen=True)
class Window:
    until: datetime  # read `between` since and this
    resume: datetime  # where `since` goes once the window is read

    def dump(self) -> str:
        return json.dumps({"until": self.until.isoformat(), "resume": self.resume.isoformat()})

    @classmethod
    def parse(cls, raw: bytes | str) -> Window | None:
        try:
            data = json.loads(raw)
            until, resume = parse_time(data["until"]), parse_time(data["resume"])
        except (ValueError, TypeError, KeyError):
            return None  # unreadable: read forward from since, as without one
        return None if until is None or resume is None else cls(until=until, resume=resume)


def parse_time(value: bytes | str | None) -> datetime | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
