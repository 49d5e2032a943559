"""Seam's official Python SDK (PyPI `seam` 3.18.0) works against the sandbox on every route.

The sandbox runs as `python -m seam_sandbox` on a free 127.0.0.1 port; the SDK talks to it over
real TCP with its own HTTP methods (GET reads, POST create, PATCH update, DELETE delete).
`wait_for_action_attempt=False`: the sandbox does not serve `/action_attempts/get`, which the
SDK would poll after each write.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sandbox_process import serving
from seam.exceptions import SeamHttpApiError
from seam.seam import Seam

SCENARIO = "device_count: 2\ndevice_defaults: {latency: {kind: fixed, seconds: 0.2}}\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A `python -m seam_sandbox` subprocess on 127.0.0.1; yields its announcement line."""
    with serving(SCENARIO, tmp_path_factory.mktemp("sdk")) as announced:
        yield announced


@pytest.fixture
def seam(served: dict[str, Any]) -> Iterator[Seam]:
    client = Seam(
        api_key=served["api_key"], endpoint=served["endpoint"], wait_for_action_attempt=False
    )
    yield client
    client.client.close()


def _window(hours: float) -> tuple[str, str]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
    return start.isoformat(), (start + timedelta(hours=4)).isoformat()


def test_sdk_reads_devices(seam: Seam, served: dict[str, Any]) -> None:
    """devices.list and devices.get (GET) return the sandbox's locks as SDK Device objects."""
    devices = seam.devices.list()
    assert sorted(d.device_id for d in devices) == sorted(served["device_ids"])
    lock = served["device_ids"][0]
    device = seam.devices.get(device_id=lock)
    assert device.properties is not None
    assert (device.device_id, device.properties.online) == (lock, True)


def test_sdk_runs_a_codes_life(seam: Seam, served: dict[str, Any]) -> None:
    """generate_code, create, get, list, update (PATCH) and delete (DELETE) all succeed."""
    lock = served["device_ids"][1]
    pin = seam.access_codes.generate_code(device_id=lock).code
    starts_at, ends_at = _window(1)
    made = seam.access_codes.create(
        device_id=lock, code=pin, name="sdk stay", starts_at=starts_at, ends_at=ends_at
    )
    code_id = made.access_code_id
    got = seam.access_codes.get(access_code_id=code_id)
    assert (got.code, got.name, got.device_id) == (pin, "sdk stay", lock)
    assert [c.access_code_id for c in seam.access_codes.list(device_id=lock)] == [code_id]
    seam.access_codes.update(access_code_id=code_id, name="renamed")
    assert seam.access_codes.get(access_code_id=code_id).name == "renamed"
    seam.access_codes.delete(access_code_id=code_id)
    assert seam.access_codes.get(access_code_id=code_id).status == "removing"


def test_sdk_reads_a_seam_error(seam: Seam) -> None:
    """An unknown lock reaches the SDK as its SeamHttpApiError with Seam's type and status."""
    with pytest.raises(SeamHttpApiError) as caught:
        seam.access_codes.generate_code(device_id="no-such-lock")
    assert (caught.value.status_code, caught.value.code) == (404, "device_not_found")


def test_sdk_reads_events_and_manages_webhooks(seam: Seam, served: dict[str, Any]) -> None:
    """events.list / events.get and webhooks create, list, get, delete (DELETE) succeed."""
    lock = served["device_ids"][0]
    made = seam.access_codes.create(device_id=lock, name="evented")
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    events = seam.events.list(since=since, access_code_ids=[made.access_code_id])
    assert "access_code.created" in {e.event_type for e in events}
    assert seam.events.get(event_id=events[0].event_id).event_id == events[0].event_id
    hook = seam.webhooks.create(url="http://127.0.0.1:9/hook")
    assert (hook.secret or "").startswith("whsec_")
    assert [w.webhook_id for w in seam.webhooks.list()] == [hook.webhook_id]
    assert seam.webhooks.get(webhook_id=hook.webhook_id).url == hook.url
    seam.webhooks.delete(webhook_id=hook.webhook_id)
    assert seam.webhooks.list() == []
