"""Gateway API output and network isolation (issue #20)."""

from __future__ import annotations

from modelyard.deploy import k8s
from tests.deploy.helpers import find, kinds, messages, pairs, rendered


def test_http_route_and_an_inference_pool_per_model() -> None:
    result = rendered(
        "isolated.yaml", gateway_api=k8s.ParentGateway("inference-gw", "infra", "https")
    )
    route = find(result, "HTTPRoute", "chat-prod-gateway")["spec"]
    assert route["parentRefs"] == [
        {"name": "inference-gw", "namespace": "infra", "sectionName": "https"}
    ]
    rule = route["rules"][0]
    assert rule["backendRefs"] == [{"name": "chat-prod-gateway", "port": 8080}]
    assert rule["timeouts"] == {"request": "605s"}  # outlasts the gateway's own 600 s total
    pool = find(result, "InferencePool", "llama-8b")["spec"]
    assert pool["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "llama-8b",
        "app.kubernetes.io/instance": "chat-prod-llama-8b",
    }
    assert pool["targetPorts"] == [{"number": 8000}]
    assert pool["endpointPickerRef"]["name"] == "llama-8b-epp"
    picker = find(result, "Deployment", "llama-8b-epp")["spec"]["template"]["spec"]
    args = picker["containers"][0]["args"]
    assert args[args.index("--pool-name") + 1] == "llama-8b"
    assert args[args.index("--pool-namespace") + 1] == "chat-prod"
    assert picker["securityContext"]["runAsUser"] == 65532
    role = find(result, "Role", "llama-8b-epp")["rules"]
    assert {
        "apiGroups": ["inference.networking.k8s.io"],
        "resources": ["inferencepools"],
        "verbs": ["get", "watch", "list"],
    } in role
    assert messages(pairs(result)) == []


def test_engines_accept_only_the_gateway_prometheus_and_pickers() -> None:
    plain = rendered("isolated.yaml", client_namespaces=("apps",))
    engines = find(plain, "NetworkPolicy", "chat-prod-engines")["spec"]
    assert engines["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/part-of": "chat-prod",
        "app.kubernetes.io/component": "engine",
    }
    sources = [s for rule in engines["ingress"] for s in rule["from"]]
    assert sources == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/part-of": "chat-prod",
                    "app.kubernetes.io/component": "gateway",
                }
            }
        },
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    gateway = find(plain, "NetworkPolicy", "chat-prod-gateway")["spec"]["ingress"]
    assert gateway[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}
    ]
    with_api = rendered("isolated.yaml", gateway_api=k8s.ParentGateway("gw"))
    engine_rules = find(with_api, "NetworkPolicy", "chat-prod-engines")["spec"]["ingress"][0][
        "from"
    ]
    assert {
        "namespaceSelector": {"matchLabels": {"modelyard.dev/inference-gateway": "true"}}
    } in engine_rules
    assert "chat-prod-endpoint-pickers" in [
        d["metadata"]["name"] for _, d in pairs(with_api) if d["kind"] == "NetworkPolicy"
    ]
    assert kinds(plain).count("NetworkPolicy") == 2
