"""modelyard.placement: the one placement rule (devices, members, fractions, sharing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.errors import PlacementError
from modelyard.fleet import load_fleet
from modelyard.placement import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    PlacementOverride,
    device_plans,
    memory_fraction,
)
from tests.conftest import ROOT


def _fleet(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


MIXED = """\
name: mixed
models:
  llama: {catalog: llama-3.1-8b, engine: vllm, gpu: h100-sxm, replicas: 2}
  mistral: {catalog: mistral-7b-instruct-v0.2, engine: vllm, gpu: h100-sxm}
  coder: {catalog: qwen2.5-7b, engine: vllm, gpu: l4, replicas: 2, gpu_memory_utilization: 0.85}
placement:
  shared:
    - {gpu: h100-sxm, models: [llama, mistral], memory_fractions: {llama: 0.6, mistral: 0.3}}
"""


def test_fleet_as_written(tmp_path: Path) -> None:
    plans = device_plans(load_fleet(_fleet(tmp_path, MIXED)))
    assert [(p.gpu, p.sharing, [e.name for e in p.engines]) for p in plans] == [
        ("h100-sxm", "time-sliced", ["llama/0", "mistral/0"]),
        ("h100-sxm", "isolated", ["llama/1"]),  # the group's second device holds llama alone
        ("l4", "isolated", ["coder/0"]),
        ("l4", "isolated", ["coder/1"]),
    ]
    assert [e.memory_fraction for e in plans[0].engines] == [0.6, 0.3]
    assert plans[1].engines[0].memory_fraction == 0.6  # as the group gives it
    assert plans[2].engines[0].memory_fraction == 0.85
    assert [p.index for p in plans] == [0, 1, 2, 3]


def test_sharing_mode_and_mig_profiles_come_from_the_group(tmp_path: Path) -> None:
    text = MIXED.replace(
        "memory_fractions: {llama: 0.6, mistral: 0.3}}",
        "sharing: mig, mig_profiles: {llama: 4g.40gb, mistral: 3g.40gb}}",
    )
    first = device_plans(load_fleet(_fleet(tmp_path, text)))[0]
    assert first.sharing == "mig"
    assert [e.mig_profile for e in first.engines] == ["4g.40gb", "3g.40gb"]


def test_overrides(tmp_path: Path) -> None:
    loaded = load_fleet(_fleet(tmp_path, MIXED.replace("gpu: l4", "gpu: h100-sxm")))
    isolated = device_plans(loaded, PlacementOverride(layout="isolated"))
    assert all(p.sharing == "isolated" for p in isolated)
    assert [e.memory_fraction for p in isolated for e in p.engines] == [0.9, 0.9, 0.9, 0.85, 0.85]
    shared = device_plans(loaded, PlacementOverride(layout="shared", gpu="h200"))
    assert shared[0].gpu == "h200" and shared[0].models == ("llama", "mistral", "coder")
    # an equal split of the default limit, except where a model states its own
    assert [e.memory_fraction for e in shared[0].engines] == [0.3, 0.3, 0.85]
    chosen = device_plans(loaded, PlacementOverride(fractions={"llama": 0.5}))
    assert chosen[0].engines[0].memory_fraction == 0.5


def test_a_group_cannot_span_gpu_types(tmp_path: Path) -> None:
    loaded = load_fleet(_fleet(tmp_path, MIXED))
    with pytest.raises(PlacementError, match="cannot share one device: they name h100-sxm, l4"):
        device_plans(loaded, PlacementOverride(layout="shared"))


def test_default_fraction_and_lookup() -> None:
    loaded = load_fleet(ROOT / "examples" / "fleet.yaml")
    assert memory_fraction(loaded, "llama-8b") == DEFAULT_GPU_MEMORY_UTILIZATION == 0.9


def test_tensor_parallel_devices_span_gpus(tmp_path: Path) -> None:
    text = """\
name: tp
models:
  big: {catalog: llama-3.1-70b, gpu: h100-sxm, tensor_parallel_size: 2, replicas: 2}
  small: {catalog: llama-3.1-8b, gpu: h100-sxm}
"""
    plans = device_plans(load_fleet(_fleet(tmp_path, text)))
    assert [(p.models, p.gpu_count) for p in plans] == [
        (("big",), 2),
        (("big",), 2),
        (("small",), 1),
    ]
