"""Scenario loading, determinism for a seed, the clock and the accounting."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import pytest
from sandbox_helpers import LOCK, FakeMonotonic, MakeClient, create, frozen_sandbox

from seam_sandbox import SandboxClock, Scenario, ScenarioError, load_scenario
from seam_sandbox.scenario import FaultKind, builtin_scenarios

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", ["default", "faults", "rate_limited", "far_future"])
def test_builtin_scenarios_load_by_name(name: str) -> None:
    """Every shipped scenario loads by name."""
    assert name in builtin_scenarios()
    assert load_scenario(name).device_specs()


def test_faults_scenario_covers_every_fault_kind() -> None:
    """faults.yaml exercises every fault kind, outages, slow answers and drops."""
    scenario = load_scenario("faults")
    kinds = {f.kind for d in scenario.devices for f in d.faults}
    assert kinds == set(get_args(FaultKind))
    assert scenario.outages and scenario.slow and scenario.drops


def test_load_yaml_and_json_files(tmp_path: Path) -> None:
    """A scenario loads from a YAML file and from a JSON file."""
    (tmp_path / "s.yaml").write_text("device_count: 2\nspeed: 10\n")
    (tmp_path / "s.json").write_text(json.dumps({"devices": [{"id": "a"}], "api_key": "k"}))
    from_yaml, from_json = load_scenario(tmp_path / "s.yaml"), load_scenario(tmp_path / "s.json")
    assert [d.id for d in from_yaml.device_specs()] == ["sandbox_device_1", "sandbox_device_2"]
    assert from_yaml.speed == 10
    assert from_json.api_key == "k" and from_json.device_specs()[0].id == "a"


def test_invalid_scenario_names_the_field(tmp_path: Path) -> None:
    """An invalid scenario file raises ScenarioError naming the faulty field."""
    path = tmp_path / "bad.yaml"
    path.write_text("devices:\n  - id: a\n    faults:\n      - {kind: device_offline}\n")
    with pytest.raises(ScenarioError, match=r"devices\.0\.faults\.0.*needs a duration"):
        load_scenario(path)


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    """A misspelt field is rejected by name rather than ignored."""
    path = tmp_path / "bad.yaml"
    path.write_text("device_cuont: 2\n")
    with pytest.raises(ScenarioError, match="device_cuont"):
        load_scenario(path)


def test_unparsable_file_and_unknown_name(tmp_path: Path) -> None:
    """Broken YAML and unknown names raise ScenarioError."""
    path = tmp_path / "broken.yaml"
    path.write_text("devices: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match=r"built-in scenarios: .*default"):
        load_scenario("nope")


async def _script(seed: int, make_client: MakeClient) -> list[tuple[str, str, datetime | None]]:
    sb = frozen_sandbox(load_scenario("default"), seed=seed)
    client = make_client(sb)
    out = []
    for device_id in sb.device_ids * 2:
        await client.post("/devices/list", json={})  # reads must not shift later draws
        code = (await create(client, device_id=device_id)).json()["access_code"]
        out.append(
            (code["access_code_id"], code["code"], sb.mark_scheduled_at(code["access_code_id"]))
        )
    return out


async def test_same_seed_same_codes(make_client: MakeClient) -> None:
    """The same requests with the same seed give the same ids, PINs and latencies."""
    first, again = await _script(7, make_client), await _script(7, make_client)
    assert first == again
    assert await _script(8, make_client) != first


async def test_reads_do_not_shift_draws(make_client: MakeClient) -> None:
    """Polling between creates does not change what later creates draw."""
    quiet, busy = frozen_sandbox(seed=3), frozen_sandbox(seed=3)
    quiet_client, busy_client = make_client(quiet), make_client(busy)
    await create(quiet_client)
    await create(busy_client)
    for _ in range(5):
        await busy_client.post("/access_codes/list", json={"device_id": LOCK})
    a = (await create(quiet_client)).json()["access_code"]
    b = (await create(busy_client)).json()["access_code"]
    assert (a["access_code_id"], a["code"]) == (b["access_code_id"], b["code"])


def test_clock_runs_at_its_speed_and_advances() -> None:
    """SandboxClock runs `speed` sandbox seconds per real second, plus advance()."""
    real = FakeMonotonic()
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = SandboxClock(speed=60, start=start, monotonic=real)
    real.now += 2
    clock.advance(30)
    assert (clock.now() - start).total_seconds() == 150
    assert clock.now().tzinfo is not None
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_stats_count_requests_codes_and_duplicate_names(make_client: MakeClient) -> None:
    """stats counts requests per route and status, 429s, codes, duplicate names and peaks."""
    sb = frozen_sandbox()
    client = make_client(sb)
    for _ in range(11):
        await create(client, name="Stay 1")
    await client.post("/access_codes/get", json={"access_code_id": "nope"})
    stats = sb.stats()
    assert stats["requests"]["/access_codes/create"] == {"200": 10, "429": 1}
    assert stats["requests"]["/access_codes/get"] == {"404": 1}
    assert stats["rate_limited"] == 1
    assert stats["codes_per_device"] == {LOCK: 10}
    assert stats["duplicate_names"] == {LOCK: ["Stay 1"]}
    assert stats["codes_created_total"] == 10
    assert stats["max_requests_per_second"] == 12
    assert stats["max_requests_per_second_by_route"]["/access_codes/create"] == 11


async def test_peak_rate_counts_any_one_second_window(make_client: MakeClient) -> None:
    """The peak request rate is the most requests within any real 1-second window."""
    real = FakeMonotonic()
    sb = frozen_sandbox(monotonic=real)
    client = make_client(sb)
    for step in (0.0, 0.6, 0.6, 0.3, 2.0):  # at 0, 0.6, 1.2, 1.5 and 3.5 s
        real.now += step
        await client.get("/devices/list")
    assert sb.stats()["max_requests_per_second"] == 3


async def test_stats_route_needs_no_key(make_client: MakeClient) -> None:
    """GET /_sandbox/stats answers the same accounting without an API key."""
    sb = frozen_sandbox()
    await create(make_client(sb))
    response = await make_client(sb, key="").get("/_sandbox/stats")
    assert response.status_code == 200
    assert response.json()["codes_created_total"] == 1
    assert set(response.json()) == set(sb.stats())


def test_default_scenario_has_generic_devices() -> None:
    """An empty device list gives device_count generic devices sandbox_device_N."""
    assert [d.id for d in Scenario(device_count=2).device_specs()] == [
        "sandbox_device_1",
        "sandbox_device_2",
    ]
