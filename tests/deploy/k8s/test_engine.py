"""One model's runtime: workload, headless Service, volume, hardening, replicas (issue #20)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.deploy import k8s
from modelyard.deploy.errors import DeployError
from modelyard.fleet import load_fleet
from tests.deploy.helpers import (
    BOUNDS,
    EXAMPLES,
    engine,
    find,
    kinds,
    messages,
    node_terms,
    pairs,
    pod_spec,
    render_fleet,
    rendered,
)


def test_engine_pod_is_hardened_and_keeps_the_llm_protections() -> None:
    result = rendered("isolated.yaml")
    pod = find(result, "Deployment", "mistral-7b")["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # what a non-root engine with a read-only root writes: the cache volume (not under /root),
    # HOME and /tmp
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {
        "/models": "model-cache",
        "/dev/shm": "dshm",
        "/tmp": "tmp",
        "/home/modelyard": "home",
    }
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HOME"] == "/models" and env["HOME"] == "/home/modelyard"
    assert spec["enableServiceLinks"] is False and spec["automountServiceAccountToken"] is False
    assert spec["priorityClassName"] == "chat-prod-serving"
    assert container["image"] == "vllm/vllm-openai:v0.11.0"
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1"
    assert node_terms(spec) == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A10G"]}
    ]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in spec["volumes"]
    assert container["args"][:2] == ["serve", "TheBloke/Mistral-7B-Instruct-v0.2-AWQ"]
    assert "--quantization" in container["args"] and "awq_marlin" in container["args"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    # preStop 10 s + the fleet's total timeout (600 s default) + 5 s margin
    assert spec["terminationGracePeriodSeconds"] == 615
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def test_startup_probe_is_sized_from_the_weights() -> None:
    probe = engine(rendered("isolated.yaml"), "Deployment", "mistral-7b")["startupProbe"]
    loaded = load_fleet(EXAMPLES / "isolated.yaml")
    spec = loaded.model_spec("mistral-7b")
    # hand computation: linear weights at 4.15625 bits, embeddings + lm_head at 16 bits
    weights = spec.linear_params * 4.15625 / 8 + (spec.params - spec.linear_params) * 2
    seconds = (weights / 100e6 + 180) * 2
    assert probe["periodSeconds"] == 10
    assert abs(probe["failureThreshold"] - math.ceil(seconds / 10)) <= 1
    slow = engine(
        rendered("isolated.yaml", load_bandwidth_bytes_s=20e6), "Deployment", "mistral-7b"
    )
    assert slow["startupProbe"]["failureThreshold"] > probe["failureThreshold"]


def test_autoscaled_engine_has_no_fixed_replicas_a_budget_and_spread() -> None:
    result = rendered("isolated.yaml", {"llama-8b": BOUNDS})
    sts = find(result, "StatefulSet", "llama-8b")
    assert "replicas" not in sts["spec"]  # KEDA owns the count: `kubectl apply` never fights it
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    scaled = find(result, "ScaledObject", "llama-8b")["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (2, 6)
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "llama-8b",
    }
    trigger = scaled["triggers"][0]
    assert trigger["metadata"]["threshold"] == "19.50"
    assert trigger["metadata"]["query"] == (
        'sum(vllm:num_requests_running{namespace="chat-prod",pod=~"llama-8b-[0-9]+"}) + '
        'sum(vllm:num_requests_waiting{namespace="chat-prod",pod=~"llama-8b-[0-9]+"})'
    )
    assert find(result, "PodDisruptionBudget", "llama-8b")["spec"]["maxUnavailable"] == 1
    spread = pod_spec(result, "StatefulSet", "llama-8b")["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"
    assert spread[0]["whenUnsatisfiable"] == "DoNotSchedule"
    # the single-replica fallback: no budget (it would block drains), no spread
    assert not [
        d
        for _, d in pairs(result)
        if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "mistral-7b"
    ]
    assert messages(pairs(result)) == []


def test_sizing_that_needs_no_more_than_the_minimum_fixes_the_count() -> None:
    flat = k8s.ReplicaBounds(2, 2, 19.5, 2.5, "simulated")
    result = rendered("isolated.yaml", {"llama-8b": flat})
    assert find(result, "StatefulSet", "llama-8b")["spec"]["replicas"] == 2
    assert "ScaledObject" not in kinds(result)
    # without sizing (--autoscale none): the fleet's replicas as written
    assert find(rendered("isolated.yaml"), "StatefulSet", "llama-8b")["spec"]["replicas"] == 2
    off = rendered("isolated.yaml", {"llama-8b": BOUNDS}, autoscaler="none")
    assert "ScaledObject" not in kinds(off)


def test_images_can_be_pinned_by_digest_and_must_be_pinned() -> None:
    digest = "sha256:" + "ab" * 32
    result = rendered("isolated.yaml", engine_images={"vllm": f"vllm/vllm-openai@{digest}"})
    container = engine(result, "Deployment", "mistral-7b")
    assert container["image"] == f"vllm/vllm-openai@{digest}"
    labels = find(result, "Deployment", "mistral-7b")["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "sha256-abababababab"
    with pytest.raises(DeployError, match="names no tag or digest, so it floats"):
        rendered("isolated.yaml", engine_images={"vllm": "vllm/vllm-openai"})
    with pytest.raises(DeployError, match="--gateway-image: 'Bad Image' is not an image reference"):
        rendered("isolated.yaml", gateway_image="Bad Image")


def test_an_engine_that_drains_gets_its_own_timeout(write_fleet: Callable[..., Path]) -> None:
    fleet = write_fleet(
        "name: f\nmodels:\n  a: {catalog: gemma-3-270m, engine: vllm, gpu: l4,"
        " engine_args: [--shutdown-timeout, '900']}\n"
    )
    result = render_fleet(load_fleet(fleet))
    assert pod_spec(result, "Deployment", "a")["terminationGracePeriodSeconds"] == 10 + 900 + 5
    assert messages(pairs(result)) == []


def test_fleets_that_cannot_be_deployed_say_why(write_fleet: Callable[..., Path]) -> None:
    cpu = load_fleet(
        write_fleet("name: f\nmodels:\n  a: {catalog: gemma-3-270m, engine: llamacpp}\n")
    )
    with pytest.raises(DeployError, match=r"models.a: no `gpu:`"):
        render_fleet(cpu)
    gguf = load_fleet(
        write_fleet("name: f\nmodels:\n  a: {catalog: gemma-3-270m, engine: llamacpp, gpu: l4}\n")
    )
    with pytest.raises(DeployError, match=r"llama\.cpp needs a GGUF repository"):
        render_fleet(gguf)
    with pytest.raises(DeployError, match="no 'gke' node label value"):
        rendered("isolated.yaml", node_label="gke")
    with pytest.raises(DeployError, match="Multi-Attach"):
        rendered("isolated.yaml", workload="deployment")
    ollama = load_fleet(
        write_fleet("name: f\nmodels:\n  a: {catalog: gemma-3-270m, engine: ollama, gpu: l4}\n")
    )
    with pytest.raises(Exception, match="no container command"):
        render_fleet(ollama)


def test_engine_named_service_is_renamed_and_llamacpp_fetches_its_repo(
    write_fleet: Callable[..., Path],
) -> None:
    fleet = write_fleet(
        "name: f\nmodels:\n  vllm: {catalog: gemma-3-270m, engine: llamacpp, gpu: l4,"
        " weights: ggml-org/gemma-3-270m-GGUF}\n"
    )
    result = render_fleet(load_fleet(fleet))
    assert find(result, "Service", "vllm-model")["spec"]["clusterIP"] == "None"
    container = engine(result, "Deployment", "vllm-model")
    assert container["image"] == "ghcr.io/ggml-org/llama.cpp:server-cuda-b6700"
    assert container["command"] == ["/app/llama-server"]
    assert container["args"][:2] == ["--hf-repo", "ggml-org/gemma-3-270m-GGUF"]
    assert {e["name"]: e.get("value") for e in container["env"]}["LLAMA_CACHE"] == "/models"
    assert messages(pairs(result)) == []


def test_awq_without_quantized_weights_warns() -> None:
    result = render_fleet(load_fleet(EXAMPLES.parent / "fleet.yaml"))
    assert any("needs a pre-quantized checkpoint" in w for w in result.warnings)


def test_tensor_parallel_engines_request_their_gpus(write_fleet: Callable[..., Path]) -> None:
    fleet = write_fleet(
        "name: f\nmodels:\n  big: {catalog: llama-3.1-70b, quant: fp8, engine: vllm, gpu: h100-sxm,"
        " tensor_parallel_size: 2, max_model_len: 8192}\n"
    )
    result = render_fleet(load_fleet(fleet))
    container = engine(result, "Deployment", "big")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "2"
    assert messages(pairs(result)) == []
