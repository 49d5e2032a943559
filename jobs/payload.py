"""The stay payload: what a booking system sends for one stay.

Validated when enqueued and again when a worker reads it back from Redis.
"""

from __future__ import annotations

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
