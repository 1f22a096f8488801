"""Shared groups render exactly the fleet's `sharing:` mode (issue #16 item 1, issue #20)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from modelyard.deploy.errors import DeployError
from modelyard.fleet import load_fleet
from tests.deploy.helpers import (
    arg,
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

H100_PAIR = """\
name: fleet-as-written
models:
  llama-8b: {{catalog: llama-3.1-8b, quant: bf16, engine: vllm, max_model_len: 8192}}
  mistral-7b: {{catalog: mistral-7b-instruct-v0.2, quant: bf16, engine: vllm, max_model_len: 8192}}
placement:
  shared:
    - gpu: h100-sxm
      models: [llama-8b, mistral-7b]
      memory_fractions: {{llama-8b: 0.6, mistral-7b: 0.3}}
{extra}
routes:
  - {{targets: [llama-8b, mistral-7b]}}
"""


@pytest.fixture
def h100_pair(write_fleet: Callable[..., Path]) -> Callable[[str], Path]:
    return lambda extra="": write_fleet(H100_PAIR.format(extra=extra))


def test_time_sliced_group_on_an_h100_renders_time_slicing_with_the_fractions(
    h100_pair: Callable[[str], Path],
) -> None:
    # the default mode on a MIG-capable GPU: before, deploy turned this into MIG slices on its own
    result = render_fleet(load_fleet(h100_pair("")))
    for name, fraction in (("llama-8b", "0.6"), ("mistral-7b", "0.3")):
        container = engine(result, "Deployment", name)
        assert arg(container, "--gpu-memory-utilization") == fraction
        limits = container["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        assert not [k for k in limits if k.startswith("nvidia.com/mig-")]
        terms = {t["key"]: t["values"] for t in node_terms(pod_spec(result, "Deployment", name))}
        # GPU Feature Discovery renames the product on shared nodes; one GPU per node pairs them
        assert terms["nvidia.com/gpu.product"] == ["NVIDIA-H100-80GB-HBM3-SHARED"]
        assert terms["nvidia.com/device-plugin.config"] == ["modelyard-fleet-as-written-0"]
        assert terms["nvidia.com/gpu.count"] == ["1"]
        assert terms["nvidia.com/gpu.replicas"] == ["2"]
        assert terms["nvidia.com/gpu.sharing-strategy"] == ["time-slicing"]
    follower = pod_spec(result, "Deployment", "mistral-7b")["affinity"]
    beside = follower["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert beside["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == "llama-8b"
    assert beside["topologyKey"] == "kubernetes.io/hostname"
    leader = pod_spec(result, "Deployment", "llama-8b")["affinity"]
    assert "podAffinity" not in leader and "podAntiAffinity" in leader
    assert list(result.node_config) == ["device-plugin-config.yaml"]
    config = result.node_config["device-plugin-config.yaml"][0]
    assert config["metadata"] == {"name": "device-plugin-config", "namespace": "gpu-operator"}
    assert list(config["data"]) == ["modelyard-fleet-as-written-0"]  # a per-pool key, not `any`
    sharing = yaml.safe_load(config["data"]["modelyard-fleet-as-written-0"])["sharing"]
    assert sharing["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 2}]
    assert any("renders time-sliced on h100-sxm as the fleet says" in w for w in result.warnings)
    suggestion = next(w for w in result.warnings if w.startswith("suggestion:"))
    assert "sharing: mig" in suggestion and "rendered time-sliced as the fleet says" in suggestion
    assert messages(pairs(result)) == []


def test_given_mig_profiles_are_rendered_as_given(h100_pair: Callable[[str], Path]) -> None:
    fleet = h100_pair(
        "      sharing: mig\n      mig_profiles: {llama-8b: 4g.40gb, mistral-7b: 2g.20gb}"
    )
    text = fleet.read_text().replace(
        "      memory_fractions: {llama-8b: 0.6, mistral-7b: 0.3}\n", ""
    )
    fleet.write_text(text)
    result = render_fleet(load_fleet(fleet))
    assert (
        engine(result, "Deployment", "llama-8b")["resources"]["limits"]["nvidia.com/mig-4g.40gb"]
        == "1"
    )
    assert (
        engine(result, "Deployment", "mistral-7b")["resources"]["limits"]["nvidia.com/mig-2g.20gb"]
        == "1"
    )
    parted = yaml.safe_load(result.node_config["mig-config.yaml"][0]["data"]["config.yaml"])
    assert parted["mig-configs"]["modelyard-fleet-as-written-0"][0]["mig-devices"] == {
        "4g.40gb": 1,
        "2g.20gb": 1,
    }
    warning = next(w for w in result.warnings if "MIG slices" in w)
    assert "picked for" not in warning
    assert not [w for w in result.warnings if w.startswith("suggestion:")]


def test_mig_without_profiles_picks_them_and_says_which() -> None:
    result = rendered("shared-mig.yaml")
    big = engine(result, "Deployment", "llama-8b")["resources"]["limits"]
    small = engine(result, "Deployment", "mistral-7b")["resources"]["limits"]
    assert big["nvidia.com/mig-3g.40gb"] == "1" and "nvidia.com/gpu" not in big
    assert small["nvidia.com/mig-1g.10gb"] == "1"
    terms = {t["key"]: t["values"] for t in node_terms(pod_spec(result, "Deployment", "llama-8b"))}
    assert terms["nvidia.com/gpu.product"] == ["NVIDIA-H100-80GB-HBM3"]  # MIG keeps the name
    assert terms["nvidia.com/mig.config"] == ["modelyard-chat-mig-0"]
    warning = next(w for w in result.warnings if "MIG slices" in w)
    assert "llama-8b=3g.40gb, mistral-7b=1g.10gb (picked for llama-8b, mistral-7b" in warning


def test_mps_renders_the_device_plugins_mps_config() -> None:
    result = rendered("shared-mps.yaml")
    key = "modelyard-chat-mps-0"
    config = yaml.safe_load(result.node_config["device-plugin-config.yaml"][0]["data"][key])
    assert config["sharing"] == {
        "mps": {
            "renameByDefault": False,
            "failRequestsGreaterThanOne": True,
            "resources": [{"name": "nvidia.com/gpu", "replicas": 2}],
        }
    }
    container = engine(result, "Deployment", "llama-8b")
    assert arg(container, "--gpu-memory-utilization") == "0.45"
    terms = {t["key"]: t["values"] for t in node_terms(pod_spec(result, "Deployment", "llama-8b"))}
    assert terms["nvidia.com/gpu.sharing-strategy"] == ["mps"]
    assert any("1/2 of the GPU's memory and threads" in w for w in result.warnings)


def test_modes_that_cannot_run_as_written_say_why(h100_pair: Callable[[str], Path]) -> None:
    # MPS gives each of two clients half the memory: 0.6 cannot start
    with pytest.raises(
        DeployError,
        match=r"sharing mps: .*llama-8b asks for 0.6; give memory_fractions of at most 0.50",
    ):
        render_fleet(load_fleet(h100_pair("      sharing: mps")))
    fleet = h100_pair(
        "      sharing: mig\n      mig_profiles: {llama-8b: 7g.80gb, mistral-7b: 1g.10gb}"
    )
    fleet.write_text(
        fleet.read_text().replace("      memory_fractions: {llama-8b: 0.6, mistral-7b: 0.3}\n", "")
    )
    with pytest.raises(
        DeployError, match=r"placement.shared.0: sharing mig: no MIG profiles of h100-sxm fit"
    ):
        render_fleet(load_fleet(fleet))
    with pytest.raises(DeployError, match="GKE configures GPU sharing on the node pool"):
        render_fleet(load_fleet(h100_pair("")), node_label="gke")


def test_a10g_time_slicing_keeps_node_config_out_of_the_kustomization() -> None:
    result = rendered("shared-timesliced.yaml")
    assert "device-plugin-config.yaml" in result.node_config
    kustomization = result.files["kustomization.yaml"][0]
    assert all(not r.startswith("node-config") for r in kustomization["resources"])
    assert "ConfigMap" in kinds(result)
    assert (
        find(result, "ConfigMap", "device-plugin-config")["metadata"]["namespace"] == "gpu-operator"
    )
