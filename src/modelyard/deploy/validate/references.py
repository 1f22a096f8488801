"""References between documents: selectors that pick pods, routes and pools that name Services,
and the engines a NetworkPolicy must cover. Checked when the manifests hold workloads (a
directory of Services alone may point at pods defined elsewhere)."""

from __future__ import annotations

from modelyard.deploy.validate.documents import (
    ENGINE_SERVICE_NAMES,
    Doc,
    Docs,
    find,
    matches,
    name_of,
    pod_labels,
    selects_a_pod,
    uses_gpu,
)


def _service_ports(service: Doc) -> set[int]:
    return {int(p.get("port", 0)) for p in (service.get("spec") or {}).get("ports") or []}


def _service_ref(docs: Docs, name: str, port: int | None, what: str) -> list[str]:
    service = find(docs, "Service", name)
    if service is None:
        return [f"{what} Service/{name} is not in these manifests"]
    if port is not None and port not in _service_ports(service):
        return [f"{what} Service/{name} has no port {port}"]
    return []


def service_name_findings(doc: Doc) -> list[str]:
    name = name_of(doc)
    if doc.get("kind") != "Service" or name not in ENGINE_SERVICE_NAMES:
        return []
    return [
        f"a Service named '{name}' makes Kubernetes inject {ENGINE_SERVICE_NAMES[name]}="
        "tcp://<ip>:<port> into every pod of the namespace, which the engine reads as its own "
        "setting and fails to start; rename the Service (and set enableServiceLinks: false)"
    ]


def _service(doc: Doc, docs: Docs) -> list[str]:
    selector = (doc.get("spec") or {}).get("selector") or {}
    if selector and not selects_a_pod(selector, docs):
        return [f"selector {selector} matches no pod template in these manifests"]
    return []


def _match_labels(doc: Doc) -> dict[str, str]:
    return ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}


def _pod_selector_ref(doc: Doc, docs: Docs) -> list[str]:
    selector = _match_labels(doc)
    if not selects_a_pod(selector, docs):
        return [f"selector {selector} matches no pod template in these manifests"]
    return []


def _service_monitor(doc: Doc, docs: Docs) -> list[str]:
    selector = _match_labels(doc)
    for _, other in docs:
        labels = (other.get("metadata") or {}).get("labels") or {}
        if other.get("kind") == "Service" and matches(selector, labels):
            return []
    return [f"selector {selector} matches no Service in these manifests"]


def _inference_pool(doc: Doc, docs: Docs) -> list[str]:
    spec = doc.get("spec") or {}
    out = _pod_selector_ref(doc, docs)
    picker = spec.get("endpointPickerRef") or {}
    if picker.get("kind", "Service") == "Service":
        port = (picker.get("port") or {}).get("number")
        out += _service_ref(docs, str(picker.get("name")), port, "endpointPickerRef")
    return out


def _http_route(doc: Doc, docs: Docs) -> list[str]:
    out = []
    for rule in (doc.get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            kind, name = ref.get("kind", "Service"), str(ref.get("name"))
            if kind == "Service":
                out += _service_ref(docs, name, ref.get("port"), "backendRef")
            elif find(docs, kind, name) is None:
                out.append(f"backendRef {kind}/{name} is not in these manifests")
    return out


def _network_policed(doc: Doc, docs: Docs) -> list[str]:
    """A GPU engine no NetworkPolicy admits traffic to is open to every pod of the cluster."""
    labels = pod_labels(doc)
    for _, policy in docs:
        spec = policy.get("spec") or {}
        ingress = "Ingress" in spec.get("policyTypes", ["Ingress"])
        if policy.get("kind") != "NetworkPolicy" or not ingress:
            continue
        selector = (spec.get("podSelector") or {}).get("matchLabels") or {}
        if all(labels.get(k) == v for k, v in selector.items()):
            return []
    return [
        "no NetworkPolicy selects these GPU pods: any pod in the cluster can call the engine "
        "directly, around the gateway's API keys and limits"
    ]


CHECKS = {
    "Service": _service,
    "PodDisruptionBudget": _pod_selector_ref,
    "ServiceMonitor": _service_monitor,
    "InferencePool": _inference_pool,
    "HTTPRoute": _http_route,
}


def reference_findings(doc: Doc, docs: Docs, has_workloads: bool) -> list[str]:
    if not has_workloads:
        return []
    check = CHECKS.get(str(doc.get("kind")))
    out = check(doc, docs) if check else []
    if uses_gpu(doc):
        out += _network_policed(doc, docs)
    return out
