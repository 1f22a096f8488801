"""The launcher's plan (no processes): devices, cores, GPUs and flags from the placement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelyard.engines import launcher
from modelyard.fleet import load_fleet


def test_tensor_parallel_engines_get_gpu_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("modelyard.engines.adapters.VLLM_PYTHON", Path(sys.executable))
    path = tmp_path / "fleet.yaml"
    path.write_text("""\
name: tp
models:
  big: {catalog: llama-3.1-70b, gpu: h100-sxm, tensor_parallel_size: 2, replicas: 2,
        weights: /models/llama-70b}
  small: {catalog: llama-3.1-8b, gpu: h100-sxm, weights: /models/llama-8b}
""")
    planned = launcher.plan(load_fleet(path), cores=list(range(6)))
    assert [(p.name, p.adapter.env(p.spec)) for p in planned] == [
        ("big/0", {"CUDA_VISIBLE_DEVICES": "0,1"}),
        ("big/1", {"CUDA_VISIBLE_DEVICES": "2,3"}),
        ("small/0", {"CUDA_VISIBLE_DEVICES": "4"}),
    ]
    command = " ".join(planned[0].adapter.command(planned[0].spec))
    assert "--tensor-parallel-size 2" in command
    assert "--tensor-parallel-size" not in " ".join(planned[2].adapter.command(planned[2].spec))
    assert [p.spec.cpus for p in planned] == [(0, 1), (2, 3), (4, 5)]


def test_cpu_engines_keep_one_core_each(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("""\
name: cpu
models:
  a: {catalog: gemma-3-270m, engine: llamacpp}
  b: {catalog: gemma-3-270m, engine: llamacpp}
""")
    planned = launcher.plan(load_fleet(path), cores=[0, 1, 2, 3])
    assert [(p.spec.cpus, p.spec.gpu_devices) for p in planned] == [((0,), ()), ((1,), ())]
