"""plan/capacity.py: the rate search, capacity sources and typed verdicts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.fleet import Slo, load_fleet
from modelyard.plan.capacity import COARSE_BASE_RPS, MAX_INDEX, highest_passing, rate_at
from tests.plan.helpers import EXAMPLE, simulated_capacity


@settings(max_examples=80, deadline=None)
@given(threshold=st.floats(0.01, 5000), start=st.integers(-5, MAX_INDEX + 5))
def test_the_search_finds_the_threshold_within_5_percent_from_any_start(
    threshold: float, start: int
) -> None:
    calls: list[float] = []

    def passes(rate: float) -> bool:
        calls.append(rate)
        return rate <= threshold

    found = highest_passing(passes, start)
    if threshold < COARSE_BASE_RPS:
        assert found == 0.0
    else:
        assert found <= threshold and found >= threshold / 2 ** (1 / 14) - 1e-9
        assert found == highest_passing(lambda rate: rate <= threshold)  # start changes nothing
    assert len(calls) == len(set(calls))  # no rate tested twice


def test_a_good_start_saves_simulations() -> None:
    cold: list[float] = []
    warm: list[float] = []
    highest_passing(lambda r: cold.append(r) is None and r <= 30.0)
    highest_passing(lambda r: warm.append(r) is None and r <= 30.0, start=122)  # ~29 req/s
    assert len(warm) < len(cold) - 3


def test_the_grid_tops_out() -> None:
    assert highest_passing(lambda _: True) == rate_at(MAX_INDEX)


def test_simulated_capacity_meets_the_slo_and_the_floor_is_typed() -> None:
    loaded = load_fleet(EXAMPLE)
    capacity = simulated_capacity(loaded)
    cap = capacity.isolated("llama-8b", "a10g", 1)
    assert cap.source == "simulated" and cap.rps > 0.5 and cap.feasible
    assert cap.ttft_p99_ms is not None and cap.ttft_p99_ms <= 800
    again = capacity.simulator.simulations
    assert capacity.isolated("llama-8b", "a10g", 1) is cap  # cached: no new simulation
    assert capacity.simulator.simulations == again
    impossible = simulated_capacity(loaded, Slo(ttft_p99=0.02)).isolated("llama-8b", "a10g", 1)
    assert impossible.rps == 0 and impossible.verdict.blocked_by == "slo"
    assert "llama-8b TTFT p99 is" in impossible.verdict.reason
    assert "even at zero load on a10g > SLO 20 ms" in impossible.verdict.reason


def test_memory_is_a_typed_verdict_found_without_simulating(
    write_fleet: Callable[[str], Path],
) -> None:
    path = write_fleet(
        "name: big\nmodels:\n"
        "  large: {catalog: llama-3.1-70b, gpu: a100-80gb, max_model_len: 4096}\n"
        "slo: {ttft_p99: 800ms}\n"
    )
    capacity = simulated_capacity(load_fleet(path))
    cap = capacity.isolated("large", "a10g", 1)
    assert cap.verdict.blocked_by == "memory" and cap.rps == 0
    assert cap.verdict.reason.startswith("large on a10g at 0.90: weights")
    assert capacity.simulator.simulations == 0
    two = capacity.isolated("large", "a10g", 2)
    assert two.verdict.blocked_by == "memory" and "x2 at 0.90" in two.verdict.reason


def test_given_capacity_applies_to_the_model_as_the_fleet_runs_it() -> None:
    loaded = load_fleet(EXAMPLE)
    capacity = simulated_capacity(loaded)
    capacity.given = {"llama-8b": 4.0, "mistral-7b@l4": 3.0}
    assert capacity.isolated("llama-8b", "a10g", 1).source == "given (--capacity)"
    assert capacity.isolated("mistral-7b", "l4", 1).rps == 3.0
    capacity.given = {"llama-8b": 4.0}
    # another GPU type, or another TP size, is not what the bench or the user measured
    assert capacity.isolated("llama-8b", "h100-sxm", 2).source != "given (--capacity)"
    measured = simulated_capacity(loaded)
    measured.measured = {"llama-8b": (1.5, "measured (b.json)")}
    assert measured.isolated("llama-8b", "a10g", 1).source == "measured (b.json)"


def test_shared_capacity_counts_only_models_with_traffic() -> None:
    loaded = load_fleet(EXAMPLE)
    capacity = simulated_capacity(loaded)
    fractions = {"llama-8b": 0.56, "mistral-7b": 0.34}
    both = capacity.shared(
        "a10g", "time-sliced", fractions, {"llama-8b": 0.95, "mistral-7b": 0.05}, 1
    )
    alone = capacity.shared("a10g", "time-sliced", fractions, {"mistral-7b": 1.0}, 1)
    assert both.feasible and alone.feasible
    # contention and the smaller KV cache: the pair serves less than the primary alone
    assert both.rps < capacity.isolated("llama-8b", "a10g", 1).rps
    assert pytest.approx(both.rps) != alone.rps
