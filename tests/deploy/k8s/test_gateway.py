"""The gateway's manifests and the fleet file it reads in the cluster (issue #20)."""

from __future__ import annotations

from pathlib import Path

from modelyard.deploy import k8s
from modelyard.fleet import load_fleet
from tests.deploy.helpers import (
    BOUNDS,
    EXAMPLES,
    engine,
    find,
    kinds,
    pod_spec,
    render_fleet,
    rendered,
)


def test_gateway_drains_longer_than_its_longest_request() -> None:
    result = rendered("isolated.yaml")
    container = engine(result, "Deployment", "chat-prod-gateway")
    args = container["args"]
    assert args[args.index("--grace") + 1] == "600"  # policy.timeouts.total (default 600 s)
    spec = pod_spec(result, "Deployment", "chat-prod-gateway")
    assert spec["terminationGracePeriodSeconds"] == 10 + 600 + 5
    assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    deployment = find(result, "Deployment", "chat-prod-gateway")["spec"]
    assert deployment["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert find(result, "PodDisruptionBudget", "chat-prod-gateway")["spec"]["maxUnavailable"] == 1


def test_gateway_reads_engines_through_headless_services(tmp_path: Path) -> None:
    result = rendered("isolated.yaml", {"llama-8b": BOUNDS}, namespace="llm", gateway_hpa=True)
    deployment = find(result, "Deployment", "chat-prod-gateway")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert find(result, "HorizontalPodAutoscaler", "chat-prod-gateway")["spec"]["minReplicas"] == 2
    assert find(result, "Service", "llama-8b")["spec"]["clusterIP"] == "None"
    config = find(result, "ConfigMap", "chat-prod-gateway")["data"]["fleet.yaml"]
    path = tmp_path / "fleet.yaml"
    path.write_text(config)
    loaded = load_fleet(path)  # the gateway reads exactly this file
    # one name per model: DNS answers with every ready pod, so scaling needs no re-render
    assert loaded.fleet.models["llama-8b"].endpoints == ["http://llama-8b.llm.svc:8000"]
    assert loaded.fleet.models["mistral-7b"].endpoints == ["http://mistral-7b.llm.svc:8000"]
    assert "replicas" not in loaded.fleet.models["llama-8b"].model_fields_set
    assert result.endpoints["llama-8b"] == "http://llama-8b.llm.svc:8000"


def test_a_changed_fleet_rolls_the_gateway_and_options_do_not(tmp_path: Path) -> None:
    def digest(result: k8s.Rendered) -> str:
        pod = find(result, "Deployment", "chat-prod-gateway")["spec"]["template"]
        return str(pod["metadata"]["annotations"]["modelyard.dev/config-sha256"])

    base = rendered("isolated.yaml")
    assert digest(rendered("isolated.yaml", gateway_replicas=3)) == digest(base)
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        (EXAMPLES / "isolated.yaml").read_text().replace("ttft_p99: 800ms", "ttft_p99: 1s")
    )
    assert digest(render_fleet(load_fleet(changed))) != digest(base)


def test_extra_catalogs_travel_with_the_gateways_fleet(tmp_path: Path) -> None:
    (tmp_path / "extra.yaml").write_text("models: {}\n")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "name: f\ncatalog: [extra.yaml]\nmodels:\n  a: {catalog: gemma-3-270m, engine: vllm, gpu: l4}\n"
    )
    data = find(render_fleet(load_fleet(fleet)), "ConfigMap", "f-gateway")["data"]
    assert data["catalog-0-extra.yaml"] == "models: {}\n"
    assert "catalog:\n- catalog-0-extra.yaml" in data["fleet.yaml"]
    assert "ServiceMonitor" not in kinds(render_fleet(load_fleet(fleet)))
