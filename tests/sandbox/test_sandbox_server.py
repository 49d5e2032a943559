"""The sandbox served over real loopback TCP by `seam_sandbox.server.serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_process import serving

SCENARIO = """
device_count: 2
drops:
  - {every_nth: 1, routes: [/access_codes/get]}
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A `python -m seam_sandbox` subprocess on a free port; yields its announcement line."""
    with serving(SCENARIO, tmp_path) as announced:
        yield announced


def test_serve_announces_itself_and_answers_over_tcp(served: dict[str, Any]) -> None:
    """serve prints one JSON line and answers /health and a create over loopback TCP."""
    assert served["endpoint"].startswith("http://127.0.0.1:")
    assert served["device_ids"] == ["sandbox_device_1", "sandbox_device_2"]
    headers = {"Authorization": f"Bearer {served['api_key']}"}
    with httpx.Client(base_url=served["endpoint"], headers=headers, timeout=5) as client:
        assert client.get("/health").json()["ok"] is True
        body = {"device_id": served["device_ids"][0], "code": "1234"}
        created = client.post("/access_codes/create", json=body)
        assert created.status_code == 200
        assert created.json()["access_code"]["code"] == "1234"


def test_dropped_connection_closes_the_socket(served: dict[str, Any]) -> None:
    """Over TCP a dropped request is a closed connection, not a 500."""
    headers = {"Authorization": f"Bearer {served['api_key']}"}
    with httpx.Client(base_url=served["endpoint"], headers=headers, timeout=5) as client:
        with pytest.raises(httpx.TransportError):
            client.post("/access_codes/get", json={"access_code_id": "x"})
        assert client.get("/health").status_code == 200
