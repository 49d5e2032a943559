"""Fixtures for the deployment artefacts in deploy/: parsed once, checked offline."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from deploy_helpers import DEPLOY, copy_k8s, parse_env_file, render

# Seam's fake server's key: what an operator's secret.env holds, and not a placeholder.
RENDER_KEY = "seam_apikey1_token"


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return parse_env_file(DEPLOY / "env.example")


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every object `kubectl apply -k deploy/k8s` sends, an operator's secret.env beside it."""
    k8s = copy_k8s(tmp_path_factory.mktemp("render"))
    (k8s / "secret.env").write_text(f"SEAM_API_KEY={RENDER_KEY}\n")
    return render(k8s)
