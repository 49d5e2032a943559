"""deploy/systemd: a templated unit that drains on SIGTERM, restarts, and is locked down."""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path, PurePosixPath

import pytest
from deploy_helpers import DEPLOY, parse_env_file, seconds, tool

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


def service_lines() -> list[tuple[str, str]]:
    """(key, value) of each assignment in [Service], in file order, repeats kept."""
    pairs, section = [], ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip()
        elif section == "[Service]" and "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


def effective_environment(files: dict[str, Path]) -> dict[str, str]:
    """The worker's environment as systemd builds it (systemd.exec): Environment= lines in
    order, later ones winning, then every EnvironmentFile= in order, overriding all of them."""
    env: dict[str, str] = {}
    lines = service_lines()
    for value in (v for k, v in lines if k == "Environment"):
        env |= dict(a.split("=", 1) for a in shlex.split(value))
    for value in (v for k, v in lines if k == "EnvironmentFile"):
        env |= parse_env_file(files[value.removeprefix("-")])
    return env


def test_each_instance_has_its_own_heartbeat_file() -> None:
    """With deploy/env.example installed as the env file, the heartbeat path that wins is
    per instance (%i), inside the instance's RuntimeDirectory."""
    env = effective_environment({"/etc/codeprov/codeprov.env": DEPLOY / "env.example"})
    heartbeat = PurePosixPath(env["CODEPROV_HEARTBEAT_FILE"])
    assert "%i" in str(heartbeat)
    assert heartbeat.parent == PurePosixPath("/run") / service()["RuntimeDirectory"]


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
