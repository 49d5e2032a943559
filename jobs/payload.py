"""The stay payload: what a booking system sends for one stay.

Validated when enqueued and again when a worker reads it back from Redis.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from worker.errors import InvalidInput

_ID = r"^[^\x00-\x1f\x7f]+$"  # any printable text: Seam ids are not always UUIDs


class Stay(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    booking_id: str = Field(min_length=1, max_length=200, pattern=_ID)
    device_id: str = Field(min_length=1, max_length=200, pattern=_ID)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    name: str | None = Field(None, min_length=1, max_length=200, pattern=_ID)

    @model_validator(mode="after")
    def _window(self, info: ValidationInfo) -> Stay:
        if (self.starts_at is None) != (self.ends_at is None):
            raise ValueError("starts_at and ends_at go together: give both or neither")
        if self.starts_at is None or self.ends_at is None:
            return self
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at need a timezone, e.g. 2026-12-01T15:00:00Z")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        now = (info.context or {}).get("now") or datetime.now(UTC)
        if self.ends_at <= now:
            raise ValueError("ends_at is in the past: the stay is already over")
        return self

    @property
    def code_name(self) -> str:
        """The name on Seam: given, or derived from booking_id so a re-run finds the code."""
        return self.name or f"Stay {self.booking_id}"


def parse_stay(data: Any, *, now: datetime | None = None) -> Stay:
    """A Stay from untrusted data, or InvalidInput with a message a person can act on."""
    if not isinstance(data, dict):
        raise InvalidInput(f"a stay is a JSON object, got {type(data).__name__}")
    try:
        return Stay.model_validate(data, context={"now": now} if now else None)
    except ValidationError as exc:
        raise InvalidInput(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """Pydantic errors as one line, field by field, without echoing the input values."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "stay"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


class Action(enum.StrEnum):
    PROVISION = "provision"
    UPDATE = "update"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Message:
    """One message about a stay: what to do, at which revision of the booking."""

    action: Action
    booking_id: str
    revision: int | None
    stay: Stay | None  # None for a cancel

    def is_newer_than(self, applied: int | None) -> bool:
        """Out-of-order rule: a message at or below the applied revision is stale."""
        return self.revision is None or applied is None or self.revision > applied


def parse_message(data: Any, *, now: datetime | None = None) -> Message:
    """A Message from untrusted data (an enqueue line, a stream entry), or InvalidInput."""
    if not isinstance(data, dict):
        raise InvalidInput(f"a stay is a JSON object, got {type(data).__name__}")
    fields = dict(data)
    action = _action(fields.pop("action", None))
    revision = parse_revision(fields.pop("revision", None))
    if action is Action.CANCEL:
        booking_id = fields.get("booking_id")
        if not isinstance(booking_id, str) or not re.match(_ID, booking_id) or not booking_id:
            raise InvalidInput("booking_id: a cancel needs the booking_id (printable text)")
        if len(booking_id) > 200:
            raise InvalidInput("booking_id: String should have at most 200 characters")
        return Message(action, booking_id.strip(), revision, None)
    stay = parse_stay(fields, now=now)
    return Message(action, stay.booking_id, revision, stay)


def _action(value: Any) -> Action:
    if value is None:
        return Action.PROVISION
    try:
        return Action(value)
    except ValueError:
        raise InvalidInput(
            f"action: must be one of provision, update, cancel (got {str(value)[:40]!r})"
        ) from None


def parse_revision(value: Any) -> int | None:
    """An integer, or the booking's updated-at time (ISO 8601), as microseconds since 1970."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidInput("revision: an integer or an ISO 8601 timestamp, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput("revision: must not be negative")
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("revision: an integer or an ISO 8601 timestamp") from None
        if moment.tzinfo is None:
            raise InvalidInput("revision: a timestamp needs a timezone")
        return int(moment.timestamp() * 1_000_000)
    raise InvalidInput("revision: an integer or an ISO 8601 timestamp")
