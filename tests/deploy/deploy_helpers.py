"""Helpers for the checks of deploy/: paths, env files, tools, manifest lookup."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as docker compose and systemd read them (no quoting used here)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def tool(name: str) -> str | None:
    """A command from this venv's bin (where pip puts binaries) or from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def seconds(duration: str | int) -> float:
    """A compose/systemd duration ('40', '30s', '1m30s') in seconds."""
    if isinstance(duration, int):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s?)?", duration.strip())
    assert parts and duration.strip(), f"cannot read duration {duration!r}"
    return float(int(parts[1] or 0) * 60 + int(parts[2] or 0))


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def assert_known_knobs(env: dict[str, str]) -> None:
    """Every CODEPROV_* variable is a Settings field or a heartbeat/deploy knob: no typos."""
    from worker.settings import Settings

    extra = {"CODEPROV_HEARTBEAT_FILE", "CODEPROV_HEARTBEAT_INTERVAL", "CODEPROV_WORKERS"}
    fields = {f"CODEPROV_{name.upper()}" for name in Settings.model_fields}
    unknown = {k for k in env if k.startswith("CODEPROV_")} - fields - extra
    assert not unknown, f"not codeprov settings: {sorted(unknown)}"
