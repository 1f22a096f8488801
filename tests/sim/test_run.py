from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from modelyard.fleet import load_fleet
from modelyard.sim.errors import EngineStartError, SimError
from modelyard.sim.run import SimOptions, default_mix, fleet_peak_rate, simulate
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "fleet.yaml"


def test_fleet_rates_and_mix() -> None:
    loaded = load_fleet(EXAMPLE)
    assert fleet_peak_rate(loaded) == pytest.approx(10_000 * 10 / 86_400 * 3)
    assert default_mix(loaded) == {"llama-8b": 0.95, "mistral-7b": 0.05}


def test_simulation_is_deterministic_and_complete() -> None:
    loaded = load_fleet(EXAMPLE)
    options = SimOptions(requests=2000, rate=1.0, seed=11)
    one, two = simulate(loaded, options), simulate(loaded, options)
    assert [m.ttft_ms for m in one.models] == [m.ttft_ms for m in two.models]
    assert sum(m.completed for m in one.models) == 2000
    assert one.gpus == {"a10g": 2}
    llama = one.models[0]
    assert llama.ttft_ms["p50"] < llama.ttft_ms["p99"]
    assert 0 < llama.kv_usage_mean <= llama.kv_usage_max <= 1


def test_shared_gpu_is_slower_than_isolated() -> None:
    loaded = load_fleet(EXAMPLE)
    isolated = simulate(
        loaded,
        SimOptions(
            requests=3000,
            rate=4.0,
            placement="isolated",
            gpu="a100-80gb",
            mix={"llama-8b": 1, "mistral-7b": 1},
        ),
    )
    shared = simulate(
        loaded,
        SimOptions(
            requests=3000,
            rate=4.0,
            placement="shared",
            gpu="a100-80gb",
            mix={"llama-8b": 1, "mistral-7b": 1},
        ),
    )
    assert isolated.gpus == {"a100-80gb": 2} and shared.gpus == {"a100-80gb": 1}
    for iso, sh in zip(isolated.models, shared.models, strict=True):
        assert sh.tpot_ms["p50"] > iso.tpot_ms["p50"]


def test_oom_at_start_is_vllm_like(write_fleet: Callable[[str], Path]) -> None:
    loaded = load_fleet(
        write_fleet(
            "name: x\nmodels:\n  big: {catalog: llama-3.1-70b, engine: sim, gpu: a100-80gb, max_model_len: 4096}\n"
        )
    )
    with pytest.raises(EngineStartError, match="No available memory for the cache blocks"):
        simulate(loaded, SimOptions(requests=10, rate=1.0))


def test_requests_beyond_context_are_rejected(write_fleet: Callable[[str], Path]) -> None:
    loaded = load_fleet(
        write_fleet(
            "name: x\nmodels:\n  m: {catalog: qwen2.5-7b, engine: sim, gpu: l4, max_model_len: 1024}\n"
        )
    )
    from modelyard.bench.workload import LengthDist

    result = simulate(
        loaded,
        SimOptions(
            requests=200,
            rate=1.0,
            input_tokens=LengthDist(mean=900),
            output_tokens=LengthDist(mean=200),
        ),
    )
    assert result.models[0].rejected == 200


def test_no_rate_is_an_error(write_fleet: Callable[[str], Path]) -> None:
    loaded = load_fleet(
        write_fleet("name: x\nmodels:\n  m: {catalog: qwen2.5-7b, engine: sim, gpu: l4}\n")
    )
    with pytest.raises(SimError, match="no request rate"):
        simulate(loaded, SimOptions(requests=10))


def test_cli_sim_run_json() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelyard",
            "sim",
            "run",
            str(EXAMPLE),
            "--requests",
            "500",
            "--rate",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    assert {m["name"] for m in data["models"]} == {"llama-8b", "mistral-7b"}
    assert {"p50", "p90", "p99", "mean"} <= set(data["models"][0]["ttft_ms"])


@pytest.mark.parametrize(("gpu", "rate"), [("h100-sxm", 10.0), ("a10g", 2.0)])
def test_shared_device_spans_equal_per_step_simulation(gpu: str, rate: float) -> None:
    """Chained decode spans on a shared GPU end where another engine could change its busy
    state, so they give exactly what simulating every step as its own event gives — here
    with and without preemptions (the A10G case is overloaded)."""
    loaded = load_fleet(EXAMPLE)
    options = SimOptions(gpu=gpu, rate=rate, placement="shared", requests=3000)
    spans = simulate(loaded, options)
    per_step = simulate(loaded, replace(options, per_step=True))
    for a, b in zip(spans.models, per_step.models, strict=True):
        for key in ("ttft_ms", "tpot_ms", "e2e_ms", "queue_ms"):
            for q in ("p50", "p99"):
                assert getattr(a, key)[q] == pytest.approx(getattr(b, key)[q], rel=1e-9), (
                    a.name,
                    key,
                    q,
                )
        assert a.preemptions == b.preemptions and a.completed == b.completed
    assert sum(m.preemptions for m in per_step.models) > 0 or gpu != "a10g"
