"""deploy/k8s, as `kubectl apply -k` sends it: schema-valid, consistent with itself and codeprov."""

from __future__ import annotations

import base64
import copy
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from deploy_helpers import K8S, assert_defaults_or_explained, assert_known_knobs, find
from redis.asyncio import Redis

from worker.settings import Settings
from worker.stats import metrics_app

kubernetes_validate = pytest.importorskip("kubernetes_validate")

# Oldest and newest Kubernetes minors we claim; kubernetes-validate bundles their schemas.
K8S_VERSIONS = ("1.30.0", "1.35.0")
BUILTIN_GROUPS = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1")


def builtin(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in manifests if m["apiVersion"] in BUILTIN_GROUPS]


def worker_deployment(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return find(manifests, "Deployment", "codeprov-worker")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_objects_match_the_kubernetes_schema(
    manifests: list[dict[str, Any]], version: str
) -> None:
    """Every built-in object validates strictly (unknown fields rejected), offline."""
    objects = builtin(manifests)
    assert {m["kind"] for m in objects} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_check_catches_a_misspelt_field(manifests: list[dict[str, Any]]) -> None:
    """The validator is really strict here: a typo in the pod spec fails."""
    broken = copy.deepcopy(worker_deployment(manifests))
    spec = broken["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_grace_period_outlasts_the_shutdown_wait(manifests: list[dict[str, Any]]) -> None:
    """SIGKILL comes only after arq's drain (CODEPROV_SHUTDOWN_WAIT) has had its time."""
    wait = int(find(manifests, "ConfigMap", "codeprov")["data"]["CODEPROV_SHUTDOWN_WAIT"])
    grace = worker_deployment(manifests)["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace >= wait + 10


def test_liveness_is_the_per_worker_heartbeat(manifests: list[dict[str, Any]]) -> None:
    """Startup and liveness probes run `codeprov health`; the heartbeat file sits on a mount."""
    worker = container(worker_deployment(manifests))
    for probe in ("startupProbe", "livenessProbe"):
        assert worker[probe]["exec"]["command"] == ["codeprov", "health"]
    heartbeat = find(manifests, "ConfigMap", "codeprov")["data"]["CODEPROV_HEARTBEAT_FILE"]
    mounts = [PurePosixPath(m["mountPath"]) for m in worker["volumeMounts"]]
    assert any(PurePosixPath(heartbeat).is_relative_to(m) for m in mounts)


def test_pods_run_non_root_on_a_read_only_root(manifests: list[dict[str, Any]]) -> None:
    """Every codeprov pod: non-root, read-only root filesystem, no privilege escalation."""
    for deployment in (m for m in manifests if m["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["resources"]["requests"] and c["resources"]["limits"]


def test_selectors_match_their_pods(manifests: list[dict[str, Any]]) -> None:
    """Deployments, the PDB and the Service select the pods they are meant to."""
    labels = {
        m["metadata"]["name"]: m["spec"]["template"]["metadata"]["labels"]
        for m in manifests
        if m["kind"] == "Deployment"
    }
    for name, pod_labels in labels.items():
        selector = find(manifests, "Deployment", name)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
    pdb = find(manifests, "PodDisruptionBudget", "codeprov-worker")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels["codeprov-worker"].items()
    service = find(manifests, "Service", "codeprov-metrics")
    assert service["spec"]["selector"].items() <= labels["codeprov-metrics"].items()


def pod_env(manifests: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """The variables a Deployment's container gets from its envFrom sources, in order."""
    env: dict[str, str] = {}
    for source in container(deployment)["envFrom"]:
        if "configMapRef" in source:
            env |= find(manifests, "ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            data = find(manifests, "Secret", source["secretRef"]["name"])["data"]
            env |= {k: base64.b64decode(v).decode() for k, v in data.items()}
    return env


def test_config_and_secret_make_valid_settings(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod's environment (ConfigMap + Secret) is accepted by codeprov's Settings."""
    env = pod_env(manifests, worker_deployment(manifests))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.shutdown_wait == int(env["CODEPROV_SHUTDOWN_WAIT"])
    assert_known_knobs(env)


def test_configmap_carries_the_defaults(manifests: list[dict[str, Any]]) -> None:
    """Each CODEPROV_* in configmap.yaml is codeprov's default, or a comment says why not."""
    data = find(manifests, "ConfigMap", "codeprov")["data"]
    assert_defaults_or_explained(K8S / "configmap.yaml", data)


def test_every_pod_reads_the_same_configuration(manifests: list[dict[str, Any]]) -> None:
    """Workers and metrics pods read the ConfigMap and the Secret alike (REDIS_URL in either)."""
    sources = [
        c["envFrom"]
        for d in manifests
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert len(sources) >= 2 and all(s == sources[0] for s in sources), sources
    assert {next(iter(s)) for s in sources[0]} == {"configMapRef", "secretRef"}


def test_kustomization_lists_every_manifest() -> None:
    """`kubectl apply -k deploy/k8s` applies every file in the folder."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_kustomization_sets_every_image(manifests: list[dict[str, Any]]) -> None:
    """Each container runs the registry image the Kustomization names."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    for deployment in (m for m in manifests if m["kind"] == "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            assert c["image"] in images


def scaled_object(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return find(manifests, "ScaledObject", "codeprov-worker")


def test_scaled_object_has_kedas_required_fields(manifests: list[dict[str, Any]]) -> None:
    """No schema ships for KEDA's CRD: check what KEDA requires, and string metadata values."""
    scaled = scaled_object(manifests)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == worker_deployment(manifests)["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["triggers"]
    for trigger in spec["triggers"]:
        assert trigger["type"] and isinstance(trigger["metadata"], dict)
        assert all(isinstance(v, str) for v in trigger["metadata"].values())
    metrics_api = [t for t in spec["triggers"] if t["type"] == "metrics-api"]
    assert len(metrics_api) == 1
    meta = metrics_api[0]["metadata"]
    assert {"url", "valueLocation", "targetValue"} <= meta.keys()
    assert float(meta["targetValue"]) > 0


def test_scaled_object_reaches_the_metrics_service(manifests: list[dict[str, Any]]) -> None:
    """The URL is the metrics Service's fully qualified name (KEDA resolves it from its own
    namespace), its port and the /due route."""
    url = urlsplit(scaled_object(manifests)["spec"]["triggers"][0]["metadata"]["url"])
    service = find(manifests, "Service", "codeprov-metrics")
    meta = service["metadata"]
    assert url.hostname == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    assert url.path == "/due"


@pytest.mark.anyio
async def test_value_location_is_in_the_due_answer(
    manifests: list[dict[str, Any]], redis: Redis, redis_url: str
) -> None:
    """KEDA's valueLocation names a number that codeprov's /due really answers."""
    meta = scaled_object(manifests)["spec"]["triggers"][0]["metadata"]
    app = metrics_app(redis, Settings(redis_url=redis_url))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://m"
    ) as client:
        answer = (await client.get(urlsplit(meta["url"]).path)).json()
    assert isinstance(answer[meta["valueLocation"]], int)
