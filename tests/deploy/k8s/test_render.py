"""The whole render: every example valid everywhere, what `kubectl apply -f -` gets (issue #20)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.deploy.k8s.render import KIND_ORDER
from modelyard.deploy.validate import SUPPORTED_VERSIONS, check_documents
from tests.deploy.helpers import DEPLOYABLE, everything, find, kinds, pairs, rendered


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize("fleet", DEPLOYABLE, ids=lambda p: p.stem)
def test_every_example_renders_valid_with_every_option(fleet: Path, version: str) -> None:
    """Strict schemas (Kubernetes and the vendored CRDs), Pod Security restricted, and the
    semantic checks, for each example fleet with autoscalers, Gateway API and monitors on."""
    result = everything(fleet)
    present = set(kinds(result))
    assert {"Namespace", "PriorityClass", "NetworkPolicy", "HTTPRoute", "ServiceMonitor"} <= present
    assert check_documents(pairs(result), version) == []


def test_namespace_enforces_restricted_and_every_object_is_in_it() -> None:
    result = rendered("isolated.yaml", namespace="llm", pod_security_version="v1.33")
    labels = find(result, "Namespace", "llm")["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "v1.33"
    cluster_scoped = {"Namespace", "PriorityClass", "Kustomization"}
    for _, doc in pairs(result):
        if doc["kind"] not in cluster_scoped and doc["metadata"].get("namespace") != "gpu-operator":
            assert doc["metadata"]["namespace"] == "llm", doc["kind"]
    assert "Namespace" not in kinds(rendered("isolated.yaml", namespace_object=False))
    own = rendered("isolated.yaml", priority_class="serving-high")
    assert "PriorityClass" not in kinds(own)
    assert (
        find(own, "Deployment", "mistral-7b")["spec"]["template"]["spec"]["priorityClassName"]
        == "serving-high"
    )


def test_the_stream_is_what_kubectl_apply_takes() -> None:
    result = everything(DEPLOYABLE[0])
    stream = result.stream()
    names = [d["kind"] for d in stream]
    assert "Kustomization" not in names
    assert names[0] == "Namespace"  # created before anything in it
    ranks = [KIND_ORDER.index(k) for k in names]
    assert ranks == sorted(ranks)
    node_config = [d for docs in result.node_config.values() for d in docs]
    assert all(d not in stream for d in node_config)
    assert len(stream) == len(pairs(result)) - 1 - len(node_config)
