"""The stay payload: what a booking system sends for one stay.

Its shape is validated when enqueued and again when a worker reads it back from Redis. That
`ends_at` is in the future is checked only for an incoming message (`parse_stay`,
`parse_message`): a stored stay stays readable after its check-out, for `codeprov status`, a
late cancel and the step that ends a stay still waiting.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker.errors import InvalidInput

_ID = r"^[^\x00-\x1f\x7f]+$"  # any printable text: Seam ids are not always UUIDs
# The largest revision: exact as a JSON number everywhere (JavaScript, Redis's Lua) and as
# microseconds since 1970 it is the year 2255.
MAX_REVISION = 2**53 - 1


MAX_LOCKS = 10
DeviceId = Annotated[str, Field(min_length=1, max_length=200, pattern=_ID)]


class Stay(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    booking_id: str = Field(min_length=1, max_length=200, pattern=_ID)
    device_id: str = Field(min_length=1, max_length=200, pattern=_ID)  # the first lock
    # Several locks, one PIN (jobs/group.py): None for one lock. Given instead of device_id.
    device_ids: tuple[DeviceId, ...] | None = Field(None, min_length=2, max_length=MAX_LOCKS)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    name: str | None = Field(None, min_length=1, max_length=200, pattern=_ID)

    @model_validator(mode="before")
    @classmethod
    def _locks(cls, data: Any) -> Any:
        """`device_ids` (1 to 10 distinct ids) or `device_id`, exactly one; a list of one
        lock is a stay of one lock. The intake stream sends `device_ids` comma-separated."""
        if not isinstance(data, dict) or data.get("device_ids") is None:
            return data
        ids = data["device_ids"]
        if isinstance(ids, str):
            ids = ids.split(",")
        if not isinstance(ids, list | tuple) or not ids:
            raise ValueError("device_ids: a list of 1 to 10 device ids")
        ids = [i.strip() if isinstance(i, str) else i for i in ids]  # " A" is lock A, once
        if any(i == "" for i in ids):
            raise ValueError("device_ids: an empty device id (two commas, or one at the end?)")
        first = data.get("device_id")
        if first is not None and (not isinstance(first, str) or first.strip() != ids[0]):
            raise ValueError("give device_id or device_ids, not both")
        if len(ids) > MAX_LOCKS:
            raise ValueError(f"device_ids: at most {MAX_LOCKS} locks per stay")
        if len(set(map(str, ids))) != len(ids):
            raise ValueError("device_ids: each lock once")
        return {**data, "device_id": ids[0], "device_ids": ids if len(ids) > 1 else None}

    @property
    def locks(self) -> tuple[str, ...]:
        return self.device_ids or (self.device_id,)

    @model_validator(mode="after")
    def _window(self) -> Stay:
        if (self.starts_at is None) != (self.ends_at is None):
            raise ValueError("starts_at and ends_at go together: give both or neither")
        if self.starts_at is None or self.ends_at is None:
            return self
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at need a timezone, e.g. 2026-12-01T15:00:00Z")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
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
        stay = Stay.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(describe(exc)) from None
    require_not_over(stay, now or datetime.now(UTC))
    return stay


def require_not_over(stay: Stay, now: datetime) -> None:
    """An incoming stay must end in the future: a code for a stay that is over is refused."""
    if stay.ends_at is not None and stay.ends_at <= now:
        raise InvalidInput("ends_at: in the past, the stay is already over")


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
    """An integer, or the booking's updated-at time (ISO 8601), as microseconds since 1970.

    Raises nothing but InvalidInput: `str.isdigit()` alone accepts "²" and 5,000 digits, which
    `int()` then refuses with a ValueError.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidInput("revision: an integer or an ISO 8601 timestamp, not a boolean")
    if isinstance(value, str):
        value = value.strip()
        if value.isascii() and value.isdigit():
            if len(value) > len(str(MAX_REVISION)):
                raise InvalidInput(f"revision: at most {MAX_REVISION}")
            value = int(value)
        else:
            value = _timestamp(value)
    if not isinstance(value, int):
        raise InvalidInput("revision: an integer or an ISO 8601 timestamp")
    if value < 0:
        raise InvalidInput("revision: must not be negative")
    if value > MAX_REVISION:
        raise InvalidInput(f"revision: at most {MAX_REVISION}")
    return value


def _timestamp(value: str) -> int:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            "revision: ASCII digits or an ISO 8601 timestamp, e.g. 2026-11-28T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput("revision: a timestamp needs a timezone")
    try:
        return int(moment.timestamp() * 1_000_000)
    except (OverflowError, ValueError):
        raise InvalidInput("revision: the timestamp is out of range") from None
