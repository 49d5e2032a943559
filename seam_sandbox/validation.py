"""Request parameters checked as Seam checks them; every failure is a 400 `invalid_input`."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from seam_sandbox.errors import invalid_input

_PIN = re.compile(r"\d{4,12}")
Params = dict[str, Any]


@dataclass(frozen=True)
class CreateInput:
    device_id: str
    code: str | None
    name: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    common_code_key: str | None
    is_one_time_use: bool
    allow_external_modification: bool
    prefer_native_scheduling: bool
    use_backup_access_code_pool: bool = False


@dataclass(frozen=True)
class UpdateInput:
    access_code_id: str
    code: str | None
    name: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    changes_time_frame: bool
    use_backup_access_code_pool: bool = False


def required_str(params: Params, field: str) -> str:
    value = params.get(field)
    if value is None or value == "":
        raise invalid_input(field, "Required")
    if not isinstance(value, str):
        raise invalid_input(field, "Expected string")
    return value


def optional_str(params: Params, field: str) -> str | None:
    value = params.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_input(field, "Expected string")
    return value


def optional_bool(params: Params, field: str, default: bool) -> bool:
    value = params.get(field, default)
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise invalid_input(field, "Expected boolean")
    return value


def pin(params: Params) -> str | None:
    value = optional_str(params, "code")
    if value is not None and not _PIN.fullmatch(value):
        raise invalid_input("code", "Code must be 4 to 12 digits")
    return value


def str_list(params: Params, field: str) -> list[str] | None:
    value = params.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_input(field, "Expected array of strings")
    return value


def page_limit(params: Params, default: int) -> int:
    """`limit` of a list: a positive number (Seam's spec types it float); JSON or query string."""
    value = params.get("limit")
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise invalid_input("limit", "Expected number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
        raise invalid_input("limit", "Expected a number of at least 1")
    return int(min(value, 10**6))


def encode_cursor(ordinal: int) -> str:
    return base64.urlsafe_b64encode(f"after:{ordinal}".encode()).decode().rstrip("=")


def page_cursor(params: Params) -> int | None:
    """The creation ordinal a `page_cursor` (from a previous `next_page_cursor`) continues after."""
    value = optional_str(params, "page_cursor")
    if value is None or value == "":
        return None
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    prefix, _, number = text.partition(":")
    if prefix != "after" or not number.isascii() or not number.isdigit():
        raise invalid_input("page_cursor", "Not a cursor this server gave out")
    return int(number)


def timestamp(params: Params, field: str) -> datetime | None:
    value = params.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_input(field, "Expected ISO 8601 timestamp")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_input(field, "Expected ISO 8601 timestamp") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def check_time_frame(starts: datetime | None, ends: datetime | None, now: datetime) -> None:
    if (starts is None) != (ends is None):
        missing = "ends_at" if ends is None else "starts_at"
        raise invalid_input(missing, "starts_at and ends_at must be given together")
    if starts is not None and ends is not None:
        if ends <= starts:
            raise invalid_input("ends_at", "ends_at must be after starts_at")
        if ends <= now:
            raise invalid_input("ends_at", "ends_at must be in the future")


def backup_pool_flag(params: Params, time_bound: bool) -> bool:
    """`use_backup_access_code_pool`: Seam keeps backups for time-bound codes only."""
    wanted = optional_bool(params, "use_backup_access_code_pool", False)
    if wanted and not time_bound:
        raise invalid_input("use_backup_access_code_pool", "Only time-bound codes use the pool")
    return wanted


def create_input(params: Params, now: datetime, device_id: str | None = None) -> CreateInput:
    """Validate a create (`device_id` given: one lock of a create_multiple)."""
    device_id = device_id or required_str(params, "device_id")
    starts, ends = timestamp(params, "starts_at"), timestamp(params, "ends_at")
    check_time_frame(starts, ends, now)
    return CreateInput(
        device_id=device_id,
        code=pin(params),
        name=optional_str(params, "name"),
        starts_at=starts,
        ends_at=ends,
        common_code_key=optional_str(params, "common_code_key"),
        is_one_time_use=optional_bool(params, "is_one_time_use", False),
        allow_external_modification=optional_bool(params, "allow_external_modification", False),
        prefer_native_scheduling=optional_bool(params, "prefer_native_scheduling", True),
        use_backup_access_code_pool=backup_pool_flag(params, starts is not None),
    )


def update_input(
    params: Params, current: tuple[datetime | None, datetime | None], now: datetime
) -> UpdateInput:
    """Validate an update; a time frame given in part is completed from the code's own."""
    starts, ends = timestamp(params, "starts_at"), timestamp(params, "ends_at")
    changes = starts is not None or ends is not None
    if params.get("type") == "ongoing":  # Seam's way to turn a time-bound code into an ongoing one
        if changes:
            raise invalid_input("type", "an ongoing code takes no starts_at or ends_at")
        changes = True
    elif changes:
        starts, ends = starts or current[0], ends or current[1]
        check_time_frame(starts, ends, now)
    time_bound = starts is not None if changes else current[0] is not None
    return UpdateInput(
        access_code_id=required_str(params, "access_code_id"),
        code=pin(params),
        name=optional_str(params, "name"),
        starts_at=starts,
        ends_at=ends,
        changes_time_frame=changes,
        use_backup_access_code_pool=backup_pool_flag(params, time_bound),
    )
