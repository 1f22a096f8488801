"""NetworkPolicies: engines take traffic only from the gateway (and Prometheus, and the endpoint
pickers and inference gateway when the Gateway API output is on); the gateway only from its
clients and Prometheus. A pod selected by a policy refuses every other source.

Limits: Prometheus scrapes the engines on their API port (they serve /metrics there), so it
could also call the API; egress is left open, since engines download weights from the hub.
"""

from __future__ import annotations

from modelyard.deploy.k8s.engine import Scope
from modelyard.deploy.k8s.objects import (
    COMPONENT_LABEL,
    PART_OF_LABEL,
    Doc,
    k8s_name,
    labels,
    metadata,
)

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace since 1.22
INFERENCE_GATEWAY_LABEL = "modelyard.dev/inference-gateway"  # opt-in for the data plane's ns
ENDPOINT_PICKER = "endpoint-picker"


def component(fleet_name: str, name: str) -> dict[str, str]:
    return {PART_OF_LABEL: k8s_name(fleet_name), COMPONENT_LABEL: name}


def _namespace(name: str) -> Doc:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def _policy(scope: Scope, name: str, pods: dict[str, str], rules: list[Doc]) -> Doc:
    fleet = scope.loaded.fleet.name
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, labels(fleet, name, "network-policy", "v1"), scope.namespace),
        "spec": {
            "podSelector": {"matchLabels": pods},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def network_policies(scope: Scope, pickers: bool) -> list[Doc]:
    """`pickers`: the Gateway API output is rendered (endpoint pickers, inference gateway)."""
    fleet = scope.loaded.fleet.name
    options = scope.options
    http = [{"port": "http", "protocol": "TCP"}]
    prometheus = {"from": [_namespace(options.prometheus_namespace)], "ports": http}
    engine_sources: list[Doc] = [{"podSelector": {"matchLabels": component(fleet, "gateway")}}]
    if pickers:
        engine_sources.append({"podSelector": {"matchLabels": component(fleet, ENDPOINT_PICKER)}})
        engine_sources.append(
            {"namespaceSelector": {"matchLabels": {INFERENCE_GATEWAY_LABEL: "true"}}}
        )
    clients: Doc = {"ports": http}
    if options.client_namespaces:
        clients["from"] = [_namespace(ns) for ns in options.client_namespaces]
    policies = [
        _policy(
            scope,
            k8s_name(f"{fleet}-engines"),
            component(fleet, "engine"),
            [{"from": engine_sources, "ports": http}, prometheus],
        ),
        _policy(
            scope, k8s_name(f"{fleet}-gateway"), component(fleet, "gateway"), [clients, prometheus]
        ),
    ]
    if pickers:
        grpc = [{"port": "grpc", "protocol": "TCP"}]
        metrics = [{"port": "metrics", "protocol": "TCP"}]
        policies.append(
            _policy(
                scope,
                k8s_name(f"{fleet}-endpoint-pickers"),
                component(fleet, ENDPOINT_PICKER),
                [
                    {"ports": grpc},  # the inference gateway's data plane, wherever it runs
                    {"from": [_namespace(options.prometheus_namespace)], "ports": metrics},
                ],
            )
        )
    return policies
