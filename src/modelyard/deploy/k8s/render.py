"""Compose every manifest of a fleet: namespace and priority, each model's runtime (and its
autoscaler, monitor, inference pool), the gateway, network policies, and a kustomization.

Pure: `render(loaded, inputs, options)` reads no file (inputs.py does, at the edge).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelyard import __version__
from modelyard.deploy.k8s.autoscaling import scaled_object
from modelyard.deploy.k8s.engine import EngineRender, Scope, engine_docs
from modelyard.deploy.k8s.gateway import gateway_docs, gateway_name
from modelyard.deploy.k8s.gatewayapi import http_route, inference_pool
from modelyard.deploy.k8s.monitoring import service_monitor
from modelyard.deploy.k8s.network import network_policies
from modelyard.deploy.k8s.objects import Doc, k8s_name, labels, selector
from modelyard.deploy.k8s.options import RenderInputs, RenderOptions
from modelyard.deploy.k8s.sharing import Slot, plan_sharing
from modelyard.fleet import LoadedFleet

# above ordinary workloads (batch jobs on the GPU nodes yield to serving), far below the
# system classes (2,000,000,000 and up)
SERVING_PRIORITY = 100_000
PSA_LABEL = "pod-security.kubernetes.io"
# the order `kubectl apply -f -` needs: the namespace first, what pods reference before them
KIND_ORDER = (
    "Namespace",
    "PriorityClass",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Service",
    "StatefulSet",
    "Deployment",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "ServiceMonitor",
    "InferencePool",
    "HTTPRoute",
)


@dataclass
class Rendered:
    files: dict[str, list[Doc]] = field(default_factory=dict)  # in kustomization.yaml
    node_config: dict[str, list[Doc]] = field(default_factory=dict)  # cluster admin's part
    warnings: list[str] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)  # model -> the gateway's URL

    def all_files(self) -> dict[str, list[Doc]]:
        return {**self.files, **{f"node-config/{k}": v for k, v in self.node_config.items()}}

    def stream(self) -> list[Doc]:
        """What `kubectl apply -f -` takes: every applicable document (no Kustomization, no
        node configuration), in dependency order."""
        docs = [d for ds in self.files.values() for d in ds if d["kind"] != "Kustomization"]
        rank = {kind: index for index, kind in enumerate(KIND_ORDER)}
        return sorted(docs, key=lambda d: rank.get(d["kind"], len(rank)))


def _cluster_docs(scope: Scope, version: str, own_priority: bool) -> list[Doc]:
    fleet = scope.loaded.fleet.name
    docs: list[Doc] = []
    if scope.options.namespace_object:
        psa = {
            f"{PSA_LABEL}/{mode}{suffix}": value
            for mode in ("enforce", "audit", "warn")
            for suffix, value in (
                ("", "restricted"),
                ("-version", scope.options.pod_security_version),
            )
        }
        namespace_labels = {**labels(fleet, scope.namespace, "namespace", version), **psa}
        meta = {"name": scope.namespace, "labels": namespace_labels}
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    if own_priority:
        docs.append(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {
                    "name": scope.priority_class,
                    "labels": labels(fleet, scope.priority_class, "priority", version),
                },
                "value": SERVING_PRIORITY,
                "globalDefault": False,
                "preemptionPolicy": "PreemptLowerPriority",
                "description": f"modelyard fleet {fleet}: LLM engines and their gateway",
            }
        )
    return docs


def _model_docs(scope: Scope, inputs: RenderInputs, engine: EngineRender, name: str) -> list[Doc]:
    docs = list(engine.docs)
    bounds = inputs.bounds.get(name)
    if bounds is not None and engine.autoscaled:
        docs.append(scaled_object(scope, engine, bounds))
    if scope.options.service_monitor and engine.adapter.metrics_path:
        docs.append(
            service_monitor(scope, engine.service, engine.pod_labels, engine.adapter.metrics_path)
        )
    return docs


def render(
    loaded: LoadedFleet, inputs: RenderInputs, options: RenderOptions | None = None
) -> Rendered:
    """Every manifest of the fleet, by file name, plus kustomization.yaml."""
    options = options or RenderOptions()
    fleet = loaded.fleet
    own_priority = options.priority_class is None
    scope = Scope(
        loaded,
        options,
        options.namespace or k8s_name(fleet.name),
        options.priority_class or k8s_name(f"{fleet.name}-serving"),
    )
    sharing = plan_sharing(loaded, options)
    rendered = Rendered(node_config=sharing.node_config(options), warnings=list(sharing.warnings))
    # autoscalers for isolated models only: a shared group's members keep their pairing
    autoscaled = {
        name: bounds
        for name, bounds in inputs.bounds.items()
        if options.autoscaler == "keda" and sharing.slots[name].mode == "isolated"
    }
    inputs = RenderInputs(inputs.fleet_data, inputs.catalog_files, autoscaled, inputs.notes)
    rendered.warnings.extend(inputs.notes)
    rendered.files["cluster.yaml"] = _cluster_docs(scope, __version__, own_priority)
    engines: dict[str, EngineRender] = {}
    for name in _leaders_first(loaded, sharing.slots):
        slot = sharing.slots[name]
        leader = selector(engines[slot.leader].pod_labels) if slot.leader else None
        engine = engine_docs(scope, name, slot, autoscaled.get(name), leader)
        engines[name] = engine
        rendered.warnings.extend(engine.warnings)
        rendered.endpoints[name] = engine.endpoint
    for name in fleet.models:
        rendered.files[f"{engines[name].service}.yaml"] = _model_docs(
            scope, inputs, engines[name], name
        )
    gateway = gateway_docs(scope, inputs, rendered.endpoints)
    if options.service_monitor:
        gateway_labels = gateway[0]["metadata"]["labels"]
        gateway.append(service_monitor(scope, gateway_name(fleet.name), gateway_labels, "/metrics"))
    rendered.files["gateway.yaml"] = gateway
    pools = [e for e in engines.values() if e.adapter.name == "vllm"]
    if options.gateway_api is not None:
        api = [http_route(scope, options.gateway_api)]
        for engine in pools:
            api += inference_pool(scope, engine)
        rendered.files["gateway-api.yaml"] = api
        skipped = sorted(n for n, e in engines.items() if e.adapter.name != "vllm")
        if skipped:
            rendered.warnings.append(
                f"no InferencePool for {', '.join(skipped)}: the endpoint picker reads vLLM's "
                "metric names; these models are reached through modelyard's gateway only"
            )
    pickers = options.gateway_api is not None and bool(pools)
    rendered.files["network-policies.yaml"] = network_policies(scope, pickers)
    kustomization: Doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": scope.namespace,
        "resources": sorted(f for f, docs in rendered.files.items() if docs),
    }
    rendered.files = {f: docs for f, docs in rendered.files.items() if docs}
    rendered.files["kustomization.yaml"] = [kustomization]
    return rendered


def _leaders_first(loaded: LoadedFleet, slots: dict[str, Slot]) -> list[str]:
    """Model names with each shared group's leader before its followers (they name it)."""
    return sorted(loaded.fleet.models, key=lambda n: slots[n].leader is not None)
