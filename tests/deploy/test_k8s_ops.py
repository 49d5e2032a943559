"""deploy/k8s in operation: the Secret, the namespace, who owns the replica count, and what
keeps scaling going when the metrics pods are gone."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from conftest import RENDER_KEY
from deploy_helpers import K8S, copy_k8s, find, kustomize, parse_env_file, render

from worker.cli import PLACEHOLDER_KEY


def test_apply_without_secret_env_fails(tmp_path: Path) -> None:
    """Without the operator's secret.env nothing renders, so no committed key can be applied."""
    result = kustomize(copy_k8s(tmp_path))
    assert result.returncode != 0, "rendered without secret.env: a committed Secret is applied"
    assert "secret.env" in result.stderr


def test_the_only_secret_is_the_operators(manifests: list[dict[str, Any]]) -> None:
    """The applied set holds one Secret, with exactly the key from secret.env."""
    secrets = [m for m in manifests if m["kind"] == "Secret"]
    assert len(secrets) == 1
    data = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
    assert data == {"SEAM_API_KEY": RENDER_KEY}


def test_no_resource_file_holds_a_secret() -> None:
    """No file the kustomization applies declares a Secret (a placeholder would overwrite)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        kinds = [d["kind"] for d in yaml.safe_load_all((K8S / name).read_text()) if d]
        assert "Secret" not in kinds, name


def test_secret_env_stays_out_of_git() -> None:
    """secret.env is git-ignored; the committed example's key is one the worker refuses."""
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(K8S / "secret.env")], cwd=K8S, timeout=30
    )
    assert ignored.returncode == 0, "deploy/k8s/secret.env is not git-ignored"
    example = parse_env_file(K8S / "secret.env.example")
    assert PLACEHOLDER_KEY.search(example["SEAM_API_KEY"])


def test_keda_url_follows_the_namespace(tmp_path: Path) -> None:
    """Changing only the kustomization's namespace moves KEDA's URL to that namespace."""
    k8s = copy_k8s(tmp_path)
    (k8s / "secret.env").write_text(f"SEAM_API_KEY={RENDER_KEY}\n")
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    kustomization["namespace"] = "bookings-prod"
    (k8s / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    scaled = find(render(k8s), "ScaledObject", "codeprov-worker")
    url = urlsplit(scaled["spec"]["triggers"][0]["metadata"]["url"])
    assert url.hostname == "codeprov-metrics.bookings-prod.svc.cluster.local"


def test_keda_owns_the_worker_count(manifests: list[dict[str, Any]]) -> None:
    """The Deployment KEDA scales sets no replica count for every apply to reset."""
    scaled = find(manifests, "ScaledObject", "codeprov-worker")
    target = find(manifests, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert "replicas" not in target["spec"]


def test_fallback_keeps_more_than_the_minimum(manifests: list[dict[str, Any]]) -> None:
    """When KEDA cannot read /due it runs more workers than the minimum, at most the maximum."""
    spec = find(manifests, "ScaledObject", "codeprov-worker")["spec"]
    assert spec["minReplicaCount"] < spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    assert spec["triggers"][0]["metricType"] == "AverageValue"  # KEDA's fallback needs it


def test_metrics_survive_losing_a_pod(manifests: list[dict[str, Any]]) -> None:
    """Two metrics pods, and a PDB that keeps one through voluntary disruptions."""
    metrics = find(manifests, "Deployment", "codeprov-metrics")
    replicas = metrics["spec"]["replicas"]
    assert replicas >= 2
    labels = metrics["spec"]["template"]["metadata"]["labels"]
    budgets = [
        m["spec"]
        for m in manifests
        if m["kind"] == "PodDisruptionBudget"
        and m["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(budgets) == 1
    kept = budgets[0].get("minAvailable", replicas - budgets[0].get("maxUnavailable", replicas))
    assert 1 <= kept < replicas
