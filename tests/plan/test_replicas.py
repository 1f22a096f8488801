"""Replica bounds for the deploy autoscaler, from the planner's capacity (issue #20)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from modelyard.fleet import load_fleet
from modelyard.plan.replicas import size_replicas
from modelyard.sim.run import SimOptions, simulate
from modelyard.workload import LengthDist

ISOLATED = Path(__file__).resolve().parents[2] / "examples" / "k8s" / "isolated.yaml"


def test_bounds_follow_the_peak_share_and_the_availability_rule() -> None:
    loaded = load_fleet(ISOLATED)
    sizing, notes = size_replicas(
        loaded, ["llama-8b", "mistral-7b"], {"llama-8b": 2.0, "mistral-7b": 4.0}
    )
    peak = 100_000 * 4 / 86_400 * 3  # traffic: in the example
    llama, mistral = sizing["llama-8b"], sizing["mistral-7b"]
    assert math.isclose(llama.peak_rps, peak * 0.95) and math.isclose(mistral.peak_rps, peak * 0.05)
    assert (llama.min_replicas, llama.max_replicas) == (2, math.ceil(peak * 0.95 / 2.0))
    assert (mistral.min_replicas, mistral.max_replicas) == (1, 1)
    assert llama.capacity.source == "given (--capacity)"
    assert notes == []
    # more capacity per replica: never more replicas
    more, _ = size_replicas(loaded, ["llama-8b"], {"llama-8b": 4.0})
    assert more["llama-8b"].max_replicas < llama.max_replicas


def test_in_flight_target_is_capacity_times_latency_there() -> None:
    loaded = load_fleet(ISOLATED)
    sizing, _ = size_replicas(loaded, ["mistral-7b"], {"mistral-7b": 1.5})
    target = sizing["mistral-7b"].in_flight_per_replica
    # an independent run of the simulator at the same rate, on the same engine
    result = simulate(
        loaded,
        SimOptions(
            placement="isolated",
            rate=1.5,
            requests=400,
            input_tokens=LengthDist(mean=512),
            output_tokens=LengthDist(mean=256),
            mix={"mistral-7b": 1.0},
        ),
    )
    e2e_s = next(m for m in result.models if m.name == "mistral-7b").e2e_ms["mean"] / 1000
    assert target > 0 and math.isclose(target, 1.5 * e2e_s, rel_tol=0.15)


def test_no_sizing_without_an_slo_or_traffic(write_fleet: Callable[..., Path]) -> None:
    fleet = write_fleet("name: f\nmodels:\n  a: {catalog: gemma-3-270m, engine: vllm, gpu: l4}\n")
    sizing, notes = size_replicas(load_fleet(fleet), ["a"], {"a": 1.0})
    assert sizing == {} and "no slo.ttft_p99" in notes[0]
    fleet.write_text(fleet.read_text() + "slo: {ttft_p99: 1s}\n")
    sizing, notes = size_replicas(load_fleet(fleet), ["a"], {"a": 1.0})
    assert sizing == {} and "gives no peak" in notes[0]
