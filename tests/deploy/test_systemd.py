"""deploy/systemd: a templated unit that drains on SIGTERM, restarts, and is locked down."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, seconds, tool

UNIT = DEPLOY / "systemd" / "codeprov-worker@.service"


def service() -> configparser.SectionProxy:
    # strict=False: systemd allows a key more than once (SystemCallFilter); the last one wins
    # here, which is enough for the checks below.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_stop_timeout_outlasts_the_shutdown_wait(env_example: dict[str, str]) -> None:
    """SIGTERM first, SIGKILL only after arq's drain has had CODEPROV_SHUTDOWN_WAIT."""
    unit = service()
    assert unit["KillSignal"] == "SIGTERM"
    assert seconds(unit["TimeoutStopSec"]) >= int(env_example["CODEPROV_SHUTDOWN_WAIT"]) + 10


def test_restarts_and_reads_the_env_file() -> None:
    """Always restarted (arq exits on a lost Redis), configured from one env file."""
    unit = service()
    assert unit["Restart"] == "always"
    assert unit["EnvironmentFile"].startswith("/etc/codeprov/")
    assert unit["ExecStart"].endswith("codeprov worker")


def test_each_instance_has_its_own_heartbeat_file() -> None:
    """Instances on one VM do not share a heartbeat file (the env file would)."""
    unit = service()
    assert "%i" in unit["Environment"] and "CODEPROV_HEARTBEAT_FILE=" in unit["Environment"]
    assert "%i" in unit["RuntimeDirectory"]


def test_runs_unprivileged_and_hardened() -> None:
    """A dedicated user, no new privileges, a read-only system, no capabilities."""
    unit = service()
    assert unit["User"] not in ("", "root")
    assert unit["NoNewPrivileges"] == "yes"
    assert unit["ProtectSystem"] == "strict"
    assert unit["CapabilityBoundingSet"] == ""
    assert unit["PrivateTmp"] == "yes"


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` on an instance reports nothing (ExecStart swapped for true)."""
    analyze, true = tool("systemd-analyze"), tool("true")
    if analyze is None or true is None:
        pytest.skip("systemd-analyze is not installed here")
    instance = tmp_path / "codeprov-worker@1.service"
    instance.write_text(
        "\n".join(
            f"ExecStart={true}" if line.startswith("ExecStart=") else line
            for line in UNIT.read_text().splitlines()
        )
    )
    result = subprocess.run(
        [analyze, "verify", str(instance)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr
