"""Availability across nodes: topology spread and disruption budgets, for engines and gateway."""

from __future__ import annotations

from modelyard.deploy.k8s.objects import Doc

HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def pod_spread(pod_selector: dict[str, str], strict: bool) -> list[Doc]:
    """Replicas on different nodes (required when `strict`, so one drain never takes two GPU
    replicas; preferred otherwise) and, where the cluster has zones, across zones."""
    match = {"matchLabels": pod_selector}
    return [
        {
            "maxSkew": 1,
            "topologyKey": HOSTNAME,
            "whenUnsatisfiable": "DoNotSchedule" if strict else "ScheduleAnyway",
            "labelSelector": match,
        },
        {
            "maxSkew": 1,
            "topologyKey": ZONE,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": match,
        },
    ]


def disruption_budget(meta: Doc, pod_selector: dict[str, str]) -> Doc:
    """At most one replica evicted at a time (drains, upgrades); never blocks a drain outright,
    as minAvailable: 1 would with a single replica."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": pod_selector}},
    }
