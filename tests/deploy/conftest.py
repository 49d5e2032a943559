"""Fixtures for the deployment artefacts in deploy/: parsed once, checked offline."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from deploy_helpers import DEPLOY, parse_env_file


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return parse_env_file(DEPLOY / "env.example")


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def manifests() -> list[dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s (the Kustomization file excluded)."""
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs
