"""Rendering fleets as Kubernetes manifests and validating them offline (issue #8)."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.catalog.mig import mig_slices
from modelyard.deploy import k8s
from modelyard.deploy.errors import DeployError
from modelyard.deploy.validate import SUPPORTED_VERSIONS, check_directory, check_documents
from modelyard.fleet import load_fleet

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [*sorted((ROOT / "examples" / "k8s").glob("*.yaml")), ROOT / "examples/fleet.yaml"]
FIXTURES = Path(__file__).parent / "fixtures"

Doc = dict[str, Any]


def rendered(name: str, **options: Any) -> k8s.Rendered:
    return k8s.render(load_fleet(ROOT / "examples" / "k8s" / name), k8s.RenderOptions(**options))


def pairs(result: k8s.Rendered) -> list[tuple[str, Doc]]:
    return [(f, d) for f, docs in result.all_files().items() for d in docs]


def find(result: k8s.Rendered, kind: str, name: str) -> Doc:
    return next(d for _, d in pairs(result) if d["kind"] == kind and d["metadata"]["name"] == name)


def messages(docs: list[tuple[str, Doc]]) -> list[str]:
    return [str(f) for f in check_documents(docs)]


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize("fleet", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_renders_valid_in_strict_mode(fleet: Path, version: str) -> None:
    result = k8s.render(load_fleet(fleet))
    docs = pairs(result)
    assert len(docs) >= 9
    assert check_documents(docs, version) == []


def test_isolated_replicas_get_a_statefulset_with_claim_templates_inside_spec() -> None:
    result = rendered("isolated.yaml")
    sts = find(result, "StatefulSet", "llama-8b")
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "volumeClaimTemplates" not in sts  # the seed's mistake
    headless = find(result, "Service", "llama-8b-pods")
    assert headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == "llama-8b-pods"
    # the gateway addresses each replica, so its breakers and load weights are per pod
    assert result.endpoints["llama-8b"] == [
        "http://llama-8b-0.llama-8b-pods:8000",
        "http://llama-8b-1.llama-8b-pods:8000",
    ]
    # a single replica keeps a Deployment, Recreate because its cache volume is ReadWriteOnce
    deployment = find(result, "Deployment", "mistral-7b")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert find(result, "PersistentVolumeClaim", "mistral-7b-cache")["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]


def test_engine_pod_has_the_protections_the_issue_lists() -> None:
    result = rendered("isolated.yaml")
    pod = find(result, "Deployment", "mistral-7b")["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["enableServiceLinks"] is False
    assert container["image"] == "vllm/vllm-openai:v0.11.0"
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1"
    assert "nvidia.com/a10g" not in limits
    term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A10G"]}
    ]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in spec["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    assert container["args"][:2] == ["serve", "TheBloke/Mistral-7B-Instruct-v0.2-AWQ"]
    assert "--quantization" in container["args"] and "awq_marlin" in container["args"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    # default policy.timeouts.total 600 s, capped at 300 s, plus the 10 s drain
    assert spec["terminationGracePeriodSeconds"] == 310
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modelyard"


def test_startup_probe_is_sized_from_the_weights() -> None:
    result = rendered("isolated.yaml")
    probe = find(result, "Deployment", "mistral-7b")["spec"]["template"]["spec"]["containers"][0][
        "startupProbe"
    ]
    loaded = load_fleet(ROOT / "examples/k8s/isolated.yaml")
    spec = loaded.model_spec("mistral-7b")
    # hand computation: linear weights at 4.15625 bits, embeddings + lm_head at 16 bits
    linear = spec.linear_params
    other = spec.params - linear
    weights = linear * 4.15625 / 8 + other * 2
    seconds = (weights / 100e6 + 180) * 2
    assert probe["periodSeconds"] == 10
    assert abs(probe["failureThreshold"] - math.ceil(seconds / 10)) <= 1
    # a slower download allowance means more patience, never less
    slow = rendered("isolated.yaml", load_bandwidth_bytes_s=20e6)
    slow_probe = find(slow, "Deployment", "mistral-7b")["spec"]["template"]["spec"]["containers"][
        0
    ]["startupProbe"]
    assert slow_probe["failureThreshold"] > probe["failureThreshold"]


def test_shared_group_on_a_mig_gpu_renders_mig_slices() -> None:
    result = rendered("shared-mig.yaml")
    big = find(result, "Deployment", "llama-8b")["spec"]["template"]["spec"]["containers"][0]
    small = find(result, "Deployment", "mistral-7b")["spec"]["template"]["spec"]["containers"][0]
    assert big["resources"]["limits"]["nvidia.com/mig-3g.40gb"] == "1"
    assert small["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    assert "nvidia.com/gpu" not in big["resources"]["limits"]
    config = yaml.safe_load(result.node_config["mig-0.yaml"][0]["data"]["config.yaml"])
    assert config["mig-configs"]["modelyard-chat-mig-0"][0]["mig-devices"] == {
        "3g.40gb": 1,
        "1g.10gb": 1,
    }
    assert any("MIG slices" in w for w in result.warnings)


def test_mig_slice_arithmetic() -> None:
    loaded = load_fleet(ROOT / "examples/k8s/shared-mig.yaml")
    h100 = loaded.catalog.gpu("h100-sxm")
    assert mig_slices(h100, "1g.10gb") == (1, 1)
    assert mig_slices(h100, "1g.20gb") == (1, 2)
    assert mig_slices(h100, "3g.40gb") == (3, 4)
    assert mig_slices(h100, "7g.80gb") == (7, 8)


def test_shared_group_without_mig_is_time_sliced_with_memory_caps() -> None:
    result = rendered("shared-timesliced.yaml")
    for name, fraction in (("llama-8b", "0.5"), ("mistral-7b", "0.4")):
        pod = find(result, "Deployment", name)["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        assert args[args.index("--gpu-memory-utilization") + 1] == fraction
        expressions = pod["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"][0]["matchExpressions"]
        assert {"key": "nvidia.com/gpu.replicas", "operator": "In", "values": ["2"]} in expressions
    sharing = yaml.safe_load(result.node_config["time-slicing-0.yaml"][0]["data"]["any"])
    assert sharing["sharing"]["timeSlicing"]["resources"][0]["replicas"] == 2
    warning = next(w for w in result.warnings if "time-sliced" in w)
    assert "no memory or fault isolation" in warning and "it has no MIG" in warning
    # node configuration is the cluster admin's: not in the kustomization
    kustomization = result.files["kustomization.yaml"][0]
    assert all(not r.startswith("node-config") for r in kustomization["resources"])


def test_gateway_manifests_and_its_fleet_file(tmp_path: Path) -> None:
    result = rendered("isolated.yaml", namespace="llm", gateway_hpa=True)
    deployment = find(result, "Deployment", "chat-prod-gateway")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["namespace"] == "llm"
    assert find(result, "PodDisruptionBudget", "chat-prod-gateway")["spec"]["minAvailable"] == 1
    assert find(result, "HorizontalPodAutoscaler", "chat-prod-gateway")["spec"]["minReplicas"] == 2
    config = find(result, "ConfigMap", "chat-prod-gateway")["data"]["fleet.yaml"]
    path = tmp_path / "fleet.yaml"
    path.write_text(config)
    loaded = load_fleet(path)  # the gateway reads exactly this file
    assert loaded.fleet.models["mistral-7b"].endpoints == ["http://mistral-7b:8000"]
    assert len(loaded.fleet.models["llama-8b"].endpoints) == 2
    kustomization = result.files["kustomization.yaml"][0]
    assert kustomization["namespace"] == "llm"
    assert kustomization["resources"] == ["gateway.yaml", "llama-8b.yaml", "mistral-7b.yaml"]

    # the pod template carries the fleet file's digest: a changed fleet rolls the gateway pods,
    # a re-render of the same fleet (other options) does not
    def digest(result: k8s.Rendered) -> str:
        pod = find(result, "Deployment", "chat-prod-gateway")["spec"]["template"]
        return str(pod["metadata"]["annotations"]["modelyard.dev/config-sha256"])

    assert digest(rendered("isolated.yaml", gateway_replicas=3)) == digest(result)
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        (ROOT / "examples/k8s/isolated.yaml").read_text().replace("ttft_p99: 800ms", "ttft_p99: 1s")
    )
    assert digest(k8s.render(load_fleet(changed))) != digest(result)


def _fleet(text: str, tmp_path: Path) -> Any:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return load_fleet(path)


def test_fleets_that_cannot_be_deployed_say_why(tmp_path: Path) -> None:
    cpu = _fleet("name: f\nmodels:\n  a: {catalog: gemma-3-270m, engine: llamacpp}\n", tmp_path)
    with pytest.raises(DeployError, match=r"models.a: no `gpu:`"):
        k8s.render(cpu)
    gguf = _fleet(
        "name: f\nmodels:\n  a: {catalog: gemma-3-270m, engine: llamacpp, gpu: l4}\n", tmp_path
    )
    with pytest.raises(DeployError, match=r"llama\.cpp needs a GGUF repository"):
        k8s.render(gguf)
    with pytest.raises(DeployError, match="no 'gke' node label value"):
        rendered("isolated.yaml", node_label="gke")
    with pytest.raises(DeployError, match="Multi-Attach"):
        rendered("isolated.yaml", workload="deployment")
    ollama = _fleet(
        "name: f\nmodels:\n  a: {catalog: gemma-3-270m, engine: ollama, gpu: l4}\n", tmp_path
    )
    with pytest.raises(Exception, match="no container command"):
        k8s.render(ollama)


def test_engine_named_service_is_renamed_and_llamacpp_fetches_its_repo(tmp_path: Path) -> None:
    fleet = _fleet(
        "name: f\nmodels:\n  vllm: {catalog: gemma-3-270m, engine: llamacpp, gpu: l4,"
        " weights: ggml-org/gemma-3-270m-GGUF}\n",
        tmp_path,
    )
    result = k8s.render(fleet)
    assert find(result, "Service", "vllm-model")
    container = find(result, "Deployment", "vllm-model")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert container["image"] == "ghcr.io/ggml-org/llama.cpp:server-cuda-b6700"
    assert container["command"] == ["/app/llama-server"]
    assert container["args"][:2] == ["--hf-repo", "ggml-org/gemma-3-270m-GGUF"]
    assert "-ngl" in container["args"]
    assert check_documents(pairs(result)) == []


def test_awq_without_quantized_weights_warns() -> None:
    result = k8s.render(load_fleet(ROOT / "examples/fleet.yaml"))
    assert any("needs a pre-quantized checkpoint" in w for w in result.warnings)


# --- each semantic check has a failing fixture: a valid render with one thing broken ---


def broken(change: Any) -> list[str]:
    result = rendered("isolated.yaml")
    docs = copy.deepcopy(pairs(result))
    change({(d["kind"], d.get("metadata", {}).get("name", "-")): d for _, d in docs})
    return messages(docs)


def _engine(docs: dict[tuple[str, str], Doc]) -> Doc:
    return docs[("Deployment", "mistral-7b")]["spec"]["template"]["spec"]["containers"][0]


def test_check_gpu_resource_name_must_be_advertised() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        resources = _engine(docs)["resources"]
        for part in ("requests", "limits"):
            del resources[part]["nvidia.com/gpu"]
            resources[part]["nvidia.com/a10g"] = "1"

    assert any("'nvidia.com/a10g' is not a resource any device plugin" in m for m in broken(change))


def test_check_gpu_requests_equal_limits() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        _engine(docs)["resources"]["limits"]["nvidia.com/gpu"] = "2"

    assert any("requests (1) must equal limits (2)" in m for m in broken(change))


def test_check_selector_matches_template_labels() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        docs[("Deployment", "mistral-7b")]["spec"]["selector"]["matchLabels"][
            "app.kubernetes.io/name"
        ] = "other"

    found = broken(change)
    assert any("does not match the pod template's labels" in m for m in found)


def test_check_service_selector_matches_a_pod() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        docs[("Service", "mistral-7b")]["spec"]["selector"] = {"app": "nothing"}

    assert any(
        "Service/mistral-7b: selector" in m and "matches no pod" in m for m in broken(change)
    )


def test_check_pdb_selector_matches_a_pod() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        docs[("PodDisruptionBudget", "chat-prod-gateway")]["spec"]["selector"]["matchLabels"] = {
            "app": "nothing"
        }

    assert any("PodDisruptionBudget" in m and "matches no pod" in m for m in broken(change))


def test_check_probe_port_exists() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        _engine(docs)["readinessProbe"]["httpGet"]["port"] = "metrics"

    assert any("readinessProbe uses port 'metrics'" in m for m in broken(change))

    def numeric(docs: dict[tuple[str, str], Doc]) -> None:
        _engine(docs)["livenessProbe"]["httpGet"]["port"] = 9000

    assert any("livenessProbe uses port 9000" in m for m in broken(numeric))


def test_check_startup_probe_for_gpu_engines() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        del _engine(docs)["startupProbe"]

    assert any("needs a startupProbe" in m for m in broken(change))


def test_check_shm_for_gpu_engines() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        pod = docs[("Deployment", "mistral-7b")]["spec"]["template"]["spec"]
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "dshm"]
        _engine(docs)["volumeMounts"] = [
            m for m in _engine(docs)["volumeMounts"] if m["name"] != "dshm"
        ]

    assert any("no memory-backed /dev/shm" in m for m in broken(change))

    def disk_backed(docs: dict[tuple[str, str], Doc]) -> None:
        pod = docs[("Deployment", "mistral-7b")]["spec"]["template"]["spec"]
        next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"] = {}

    assert any("no memory-backed /dev/shm" in m for m in broken(disk_backed))


def test_check_service_named_like_an_engine() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        docs[("Service", "mistral-7b")]["metadata"]["name"] = "vllm"

    assert any("Service/vllm" in m and "VLLM_PORT" in m for m in broken(change))


def test_check_readwriteonce_with_rolling_update_or_replicas() -> None:
    def rolling(docs: dict[tuple[str, str], Doc]) -> None:
        docs[("Deployment", "mistral-7b")]["spec"]["strategy"] = {"type": "RollingUpdate"}

    assert any("with a RollingUpdate update" in m and "Multi-Attach" in m for m in broken(rolling))

    def default_strategy(docs: dict[tuple[str, str], Doc]) -> None:
        del docs[("Deployment", "mistral-7b")]["spec"]["strategy"]

    assert any("Multi-Attach" in m for m in broken(default_strategy))

    def replicas(docs: dict[tuple[str, str], Doc]) -> None:
        docs[("Deployment", "mistral-7b")]["spec"]["replicas"] = 3

    assert any("3 replicas share ReadWriteOnce volume" in m for m in broken(replicas))


def test_check_quantities_parse() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        _engine(docs)["resources"]["limits"]["memory"] = "17 GB"

    assert any("'17 GB' is not a Kubernetes quantity" in m for m in broken(change))

    def storage(docs: dict[tuple[str, str], Doc]) -> None:
        docs[("PersistentVolumeClaim", "mistral-7b-cache")]["spec"]["resources"]["requests"][
            "storage"
        ] = "10GiB"

    assert any("'10GiB' is not a Kubernetes quantity" in m for m in broken(storage))


def test_strict_schema_rejects_unknown_fields() -> None:
    def change(docs: dict[tuple[str, str], Doc]) -> None:
        _engine(docs)["gpus"] = 1

    found = broken(change)
    assert any("schema (Kubernetes 1.30, strict)" in m and "'gpus'" in m for m in found)


def test_the_seeds_manifest_is_rejected_with_the_right_reasons(tmp_path: Path) -> None:
    findings = [str(f) for f in check_directory(FIXTURES)]
    text = "\n".join(findings)
    assert "StatefulSet/llama-8b: schema" in text and "'volumeClaimTemplates'" in text
    assert "'nvidia.com/a10g' is not a resource any device plugin advertises" in text
    assert "needs a startupProbe" in text
    assert "no memory-backed /dev/shm" in text
    assert len(findings) == 4, findings


def test_check_directory_reads_what_deploy_writes(tmp_path: Path) -> None:
    written = k8s.write(rendered("shared-mig.yaml"), tmp_path)
    assert (tmp_path / "node-config" / "mig-0.yaml") in written
    assert check_directory(tmp_path, "1.29") == []
    (tmp_path / "gateway.yaml").unlink()
    assert [str(f) for f in check_directory(tmp_path)] == [
        "kustomization.yaml: Kustomization/-: resource gateway.yaml does not exist"
    ]


def test_unsupported_version_and_bad_directory(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"1\.20 is not supported"):
        check_documents([], "1.20")
    with pytest.raises(DeployError, match=r"no \.yaml files"):
        check_directory(tmp_path)
    (tmp_path / "bad.yaml").write_text("a: [b\n")
    with pytest.raises(DeployError, match=r"bad\.yaml: not valid YAML"):
        check_directory(tmp_path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args], capture_output=True, text=True, check=False
    )


def test_cli_renders_validates_and_rejects(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _cli("deploy", "k8s", str(ROOT / "examples/k8s/shared-timesliced.yaml"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "12 documents valid for Kubernetes 1.30 (strict)" in done.stdout
    assert "warning: shared group 0" in done.stderr
    assert (out / "kustomization.yaml").exists()
    checked = _cli("deploy", "validate", str(out), "--k8s-version", "1.33")
    assert checked.returncode == 0 and "12 documents valid for Kubernetes 1.33" in checked.stdout
    printed = _cli("deploy", "k8s", str(ROOT / "examples/k8s/isolated.yaml"), "--stdout")
    assert printed.returncode == 0
    assert [d["kind"] for d in yaml.safe_load_all(printed.stdout)].count("StatefulSet") == 1
    seed = _cli("deploy", "validate", str(FIXTURES))
    assert seed.returncode == 1
    assert seed.stderr.count("invalid:") == 4 and "error: 4 problems" in seed.stderr
    assert "Traceback" not in seed.stderr
    neither = _cli("deploy", "k8s", str(ROOT / "examples/k8s/isolated.yaml"))
    assert neither.returncode == 1 and "give exactly one of -o DIR or --stdout" in neither.stderr
    bad = _cli(
        "deploy", "k8s", str(ROOT / "examples/k8s/isolated.yaml"), "--stdout", "--workload", "pods"
    )
    assert bad.returncode == 1 and "--workload pods: choose one of auto" in bad.stderr
