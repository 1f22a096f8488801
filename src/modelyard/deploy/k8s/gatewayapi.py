"""Gateway API output: an HTTPRoute from the cluster's Gateway to modelyard's gateway, and per
vLLM model an Inference Extension InferencePool with its endpoint picker (EPP).

They compose: clients enter through the HTTPRoute and modelyard's gateway (API keys, routes,
cross-model fallback); the pools let the cluster's inference gateway (and in-cluster routers)
pick the best replica of one model from its live queue and KV-cache metrics. Schemas: Gateway
API v1.6.1 (standard channel) and Inference Extension v1.6.0, vendored under deploy/schemas.
The EPP image is llm-d-router's (the Inference Extension's EPP moved there), pinned below; its
defaults read vLLM's metric names, so pools are rendered for vLLM models only.
"""

from __future__ import annotations

import math

from modelyard.deploy.k8s import sizing
from modelyard.deploy.k8s.engine import EngineRender, Scope
from modelyard.deploy.k8s.gateway import gateway_name
from modelyard.deploy.k8s.network import ENDPOINT_PICKER
from modelyard.deploy.k8s.objects import Doc, labels, metadata, selector
from modelyard.deploy.k8s.options import ParentGateway
from modelyard.deploy.k8s.security import (
    ENDPOINT_PICKER_UID,
    container_security,
    pod_security,
    writable_scratch,
)

EPP_IMAGE = "ghcr.io/llm-d/llm-d-router-endpoint-picker:v0.10.0"
EPP_VERSION = "v0.10.0"
EPP_GRPC_PORT = 9002
EPP_HEALTH_PORT = 9003
EPP_METRICS_PORT = 9090
EPP_CPU_REQUEST = "1"
EPP_MEMORY = "1Gi"
EPP_MEMORY_LIMIT = "4Gi"
# on SIGTERM the picker reports NotServing and keeps answering for this long (its image has no
# shell for a preStop sleep)
EPP_DRAIN_S = 15
POOL_GROUP = "inference.networking.k8s.io"
# the outer route must outlast modelyard's own total timeout, so the client gets modelyard's
# answer (an SSE error event) rather than the proxy's cut
ROUTE_TIMEOUT_MARGIN_S = 5


def http_route(scope: Scope, parent: ParentGateway) -> Doc:
    fleet = scope.loaded.fleet
    name = gateway_name(fleet.name)
    ref: Doc = {"name": parent.name}
    if parent.namespace:
        ref["namespace"] = parent.namespace
    if parent.section:
        ref["sectionName"] = parent.section
    total = math.ceil(fleet.policy.timeouts.total) + ROUTE_TIMEOUT_MARGIN_S
    rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
        "backendRefs": [{"name": name, "port": sizing.GATEWAY_PORT}],
        "timeouts": {"request": f"{total}s"},
    }
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(name, labels(fleet.name, "gateway", "route", "v1"), scope.namespace),
        "spec": {"parentRefs": [ref], "rules": [rule]},
    }


def _picker_pod(scope: Scope, pool: str, pod_labels: dict[str, str]) -> Doc:
    def grpc_probe(period_s: int) -> Doc:
        return {
            "grpc": {"port": EPP_HEALTH_PORT, "service": "inference-extension"},
            "periodSeconds": period_s,
        }

    volumes, mounts = writable_scratch(home=False)
    container: Doc = {
        "name": "epp",
        "image": EPP_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "--pool-name",
            pool,
            "--pool-namespace",
            scope.namespace,
            "--pool-group",
            POOL_GROUP,
            "--grpc-port",
            str(EPP_GRPC_PORT),
            "--grpc-health-port",
            str(EPP_HEALTH_PORT),
            "--metrics-port",
            str(EPP_METRICS_PORT),
            "--zap-encoder",
            "json",
            "--tracing=false",
            f"--drain-timeout={EPP_DRAIN_S}s",
            # NetworkPolicy admits only Prometheus to the metrics port; token review would
            # need a ClusterRole
            "--metrics-endpoint-auth=false",
        ],
        "ports": [
            {"name": "grpc", "containerPort": EPP_GRPC_PORT},
            {"name": "grpc-health", "containerPort": EPP_HEALTH_PORT},
            {"name": "metrics", "containerPort": EPP_METRICS_PORT},
        ],
        "env": [
            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
        ],
        "resources": {
            "requests": {"cpu": EPP_CPU_REQUEST, "memory": EPP_MEMORY},
            "limits": {"memory": EPP_MEMORY_LIMIT},
        },
        "readinessProbe": grpc_probe(2),
        "livenessProbe": grpc_probe(10),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    return {
        "metadata": {"labels": pod_labels},
        "spec": {
            "serviceAccountName": pool_picker(pool),
            "terminationGracePeriodSeconds": sizing.termination_grace_s(0, EPP_DRAIN_S),
            "priorityClassName": scope.priority_class,
            "securityContext": pod_security(ENDPOINT_PICKER_UID),
            "containers": [container],
            "volumes": volumes,
        },
    }


def pool_picker(pool: str) -> str:
    return f"{pool}-epp"


def inference_pool(scope: Scope, engine: EngineRender) -> list[Doc]:
    """The InferencePool of one model's pods and its endpoint picker: ServiceAccount, Role to
    watch pods and the pool, Deployment and Service."""
    fleet = scope.loaded.fleet.name
    pool = engine.service
    picker = pool_picker(pool)
    pod_labels = labels(fleet, picker, ENDPOINT_PICKER, EPP_VERSION)
    pod_selector = selector(pod_labels)
    meta = metadata(picker, pod_labels, scope.namespace)
    role_rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list"]},
        {
            "apiGroups": [POOL_GROUP],
            "resources": ["inferencepools"],
            "verbs": ["get", "watch", "list"],
        },
    ]
    pool_spec = {
        "selector": {"matchLabels": selector(engine.pod_labels)},
        "targetPorts": [{"number": engine.adapter.container_port}],
        "endpointPickerRef": {
            "name": picker,
            "port": {"number": EPP_GRPC_PORT},
            "failureMode": "FailClose",
        },
    }
    ports = [
        {"name": "grpc", "port": EPP_GRPC_PORT, "targetPort": "grpc", "appProtocol": "http2"},
        {"name": "metrics", "port": EPP_METRICS_PORT, "targetPort": "metrics"},
    ]
    return [
        {
            "apiVersion": f"{POOL_GROUP}/v1",
            "kind": "InferencePool",
            "metadata": metadata(pool, engine.pod_labels, scope.namespace),
            "spec": pool_spec,
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": role_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "subjects": [{"kind": "ServiceAccount", "name": picker, "namespace": scope.namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": picker},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": pod_selector},
                "template": _picker_pod(scope, pool, pod_labels),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"type": "ClusterIP", "selector": pod_selector, "ports": ports},
        },
    ]
