"""deploy/k8s NetworkPolicies, evaluated the way Kubernetes does: a pod selected by a policy
of a type is isolated for that direction, and then only what some rule allows gets through."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_helpers import find

Rule = dict[str, Any]


def pod_labels(manifests: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    labels = find(manifests, "Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
    return dict(labels)


def rules(manifests: list[dict[str, Any]], labels: dict[str, str], kind: str) -> list[Rule] | None:
    """The rules that apply to a pod in one direction; None if no policy isolates it."""
    policies = [
        m["spec"]
        for m in manifests
        if m["kind"] == "NetworkPolicy"
        and m["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
        and kind in m["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return None
    return [r for p in policies for r in p.get(kind.lower(), [])]


def port_allowed(rule: Rule, protocol: str, port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(
        p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports
    )


def peer_allowed(peers: list[dict[str, Any]] | None, namespace: str) -> bool:
    """Whether a pod in `namespace` (or, for egress, any destination) matches the peers."""
    if not peers:
        return True
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    return any(
        "namespaceSelector" in p
        and p["namespaceSelector"].get("matchLabels", {}).items() <= ns_labels.items()
        for p in peers
    )


def ingress(manifests: list[dict[str, Any]], deployment: str, namespace: str, port: int) -> bool:
    found = rules(manifests, pod_labels(manifests, deployment), "Ingress")
    return found is None or any(
        port_allowed(r, "TCP", port) and peer_allowed(r.get("from"), namespace) for r in found
    )


def egress(manifests: list[dict[str, Any]], deployment: str, protocol: str, port: int) -> bool:
    found = rules(manifests, pod_labels(manifests, deployment), "Egress")
    return found is None or any(port_allowed(r, protocol, port) and not r.get("to") for r in found)


@pytest.mark.parametrize("namespace", ["codeprov", "default", "keda"])
@pytest.mark.parametrize("port", [8080, 9100])
def test_nothing_reaches_a_worker(
    manifests: list[dict[str, Any]], namespace: str, port: int
) -> None:
    """No pod, from any namespace, connects to a worker."""
    assert not ingress(manifests, "codeprov-worker", namespace, port)


def test_only_keda_and_prometheus_reach_the_metrics_port(
    manifests: list[dict[str, Any]],
) -> None:
    """The metrics port admits KEDA's and Prometheus' namespaces only, and no other port."""
    assert ingress(manifests, "codeprov-metrics", "keda", 9100)
    assert ingress(manifests, "codeprov-metrics", "monitoring", 9100)
    assert not ingress(manifests, "codeprov-metrics", "default", 9100)
    assert not ingress(manifests, "codeprov-metrics", "codeprov", 9100)
    assert not ingress(manifests, "codeprov-metrics", "keda", 8080)


def test_workers_reach_dns_redis_and_seam_only(manifests: list[dict[str, Any]]) -> None:
    """Workers may resolve names, reach Redis and HTTPS (Seam); nothing else goes out."""
    for protocol, port in (("UDP", 53), ("TCP", 53), ("TCP", 6379), ("TCP", 443)):
        assert egress(manifests, "codeprov-worker", protocol, port), (protocol, port)
    assert not egress(manifests, "codeprov-worker", "TCP", 80)
    assert not egress(manifests, "codeprov-worker", "TCP", 22)


def test_metrics_pods_reach_dns_and_redis_only(manifests: list[dict[str, Any]]) -> None:
    """The metrics pods only read Redis: no egress to Seam or anywhere else."""
    for protocol, port in (("UDP", 53), ("TCP", 6379)):
        assert egress(manifests, "codeprov-metrics", protocol, port), (protocol, port)
    assert not egress(manifests, "codeprov-metrics", "TCP", 443)
