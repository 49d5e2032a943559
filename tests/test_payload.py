"""The stay payload: what is accepted, and the message for what is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs.payload import MAX_REVISION, Stay, parse_revision, parse_stay
from jobs.state import StayState
from worker.errors import InvalidInput

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def stay(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "booking_id": "B1",
        "device_id": "august_device_1",
        "starts_at": "2026-12-01T15:00:00Z",
        "ends_at": "2026-12-04T11:00:00+00:00",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_valid_stay_parses() -> None:
    """A stay with both times and plain-string ids is accepted as given."""
    s = parse_stay(stay(), now=NOW)
    assert s.device_id == "august_device_1"
    assert s.ends_at == datetime(2026, 12, 4, 11, tzinfo=UTC)


def test_default_name_derives_from_booking_id() -> None:
    """Without a name, the Seam-side name is derived from booking_id (found again on re-run)."""
    assert parse_stay(stay(), now=NOW).code_name == "Stay B1"
    assert parse_stay(stay(name="Room 4"), now=NOW).code_name == "Room 4"


def test_ongoing_stay_without_times() -> None:
    """Neither starts_at nor ends_at: an ongoing code."""
    assert parse_stay(stay(starts_at=None, ends_at=None), now=NOW).starts_at is None


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"booking_id": None}, "booking_id: Field required"),
        ({"device_id": 42}, "device_id: Input should be a valid string"),
        ({"ends_at": None}, "give both or neither"),
        ({"ends_at": "2026-11-30T00:00:00Z"}, "ends_at must be after starts_at"),
        ({"starts_at": "2026-11-01T00:00:00Z", "ends_at": "2026-11-02T00:00:00Z"}, "in the past"),
        ({"starts_at": "2026-12-01T15:00:00"}, "need a timezone"),
        ({"colour": "blue"}, "colour: unknown field"),
        ({"booking_id": "x" * 201}, "booking_id: String should have at most 200 characters"),
        ({"device_id": "dev\nice"}, "device_id: String should match pattern"),
        ({"starts_at": "tomorrow"}, "starts_at: Input should be a valid datetime"),
    ],
)
def test_invalid_stays_say_what_is_wrong(over: dict[str, object], expected: str) -> None:
    """Each kind of bad payload is rejected with a message naming the field and the fix."""
    with pytest.raises(InvalidInput, match=expected):
        parse_stay(stay(**over), now=NOW)


def test_non_object_payload() -> None:
    """A payload that is not an object says so."""
    with pytest.raises(InvalidInput, match="a stay is a JSON object, got list"):
        parse_stay([1, 2], now=NOW)


def test_error_does_not_echo_values() -> None:
    """Messages name fields, not their (possibly huge or sensitive) values."""
    with pytest.raises(InvalidInput) as info:
        parse_stay(stay(device_id={"secret": "s3cr3t"}), now=NOW)
    assert "s3cr3t" not in str(info.value)


def test_times_with_offsets_compare_as_instants() -> None:
    """Times in different offsets are compared as instants."""
    s = parse_stay(stay(starts_at="2026-12-01T16:00:00+01:00"), now=NOW)
    assert s.starts_at == NOW + timedelta(days=3, hours=3)


def test_stored_stay_past_its_ends_at_still_loads() -> None:
    """A stay record whose ends_at is past (and with an unknown field) loads; parse_stay refuses."""
    over = stay(starts_at="2020-11-01T00:00:00Z", ends_at="2020-11-02T00:00:00Z")
    record = {"stay": over, "enqueued_at": NOW.isoformat(), "updated_at": NOW.isoformat()}
    loaded = StayState.model_validate({**record, "added_later": 1})
    assert loaded.stay == Stay.model_validate(over)
    with pytest.raises(InvalidInput, match="ends_at: in the past, the stay is already over"):
        parse_stay(over, now=NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7),
        ("7", 7),
        (" 42 ", 42),
        (str(MAX_REVISION), MAX_REVISION),
        ("1970-01-01T00:00:01Z", 1_000_000),
        ("2026-11-28T12:00:00+00:00", int(NOW.timestamp()) * 1_000_000),
        ("", None),
        (None, None),
    ],
)
def test_revisions_accepted(value: Any, expected: int | None) -> None:
    """ASCII digits up to 2^53-1, or an ISO 8601 timestamp with a timezone, are a revision."""
    assert parse_revision(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("²", "ASCII digits or an ISO 8601 timestamp"),
        ("٣", "ASCII digits or an ISO 8601 timestamp"),
        ("1" * 5000, f"at most {MAX_REVISION}"),
        (str(MAX_REVISION + 1), f"at most {MAX_REVISION}"),
        (2**63, f"at most {MAX_REVISION}"),
        (-1, "must not be negative"),
        ("1969-12-31T23:59:59Z", "must not be negative"),
        ("9999-12-31T23:59:59Z", f"at most {MAX_REVISION}"),
        ("2026-11-28T12:00:00", "a timestamp needs a timezone"),
        ("soon", "ASCII digits or an ISO 8601 timestamp"),
        (1.5, "an integer or an ISO 8601 timestamp"),
        (True, "not a boolean"),
    ],
)
def test_bad_revisions_are_invalid_input(value: Any, expected: str) -> None:
    """Any other revision raises InvalidInput (never ValueError) naming what a revision is."""
    with pytest.raises(InvalidInput, match=expected):
        parse_revision(value)
