"""plan/measured.py: capacities and token lengths from bench result files, and how a plan
states each capacity's source; the seed article's arithmetic that docs/planning.md quotes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from modelyard.fleet import Slo, load_fleet
from modelyard.plan.cost import Pricing
from modelyard.plan.demand import demand_from_fleet
from modelyard.plan.errors import PlanError
from modelyard.plan.measured import measured_capacities, measured_token_means
from modelyard.plan.planner import PlanRequest, plan
from tests.conftest import ROOT, bench_file, target_summary
from tests.plan.helpers import EXAMPLE


def test_measured_capacity_is_the_best_run_within_the_slo(tmp_path: Path) -> None:
    paths = []
    for rate, ttft, errors in ((1.0, 300, 0), (2.0, 700, 0), (3.0, 900, 0), (2.5, 500, 3)):
        path = tmp_path / f"r{rate}.json"
        bench_file(path, {"llama-8b": target_summary(rate, ttft, errors)})
        paths.append(path)
    best = measured_capacities(paths, Slo(ttft_p99=0.8, tpot_p99=0.06))
    assert best == {"llama-8b": (2.0, "measured (r2.0.json)")}  # 3.0 misses TTFT, 2.5 had errors


def test_plan_states_each_capacity_source(tmp_path: Path) -> None:
    loaded = load_fleet(EXAMPLE)
    path = tmp_path / "bench.json"
    bench_file(path, {"llama-8b": target_summary(1.5, 500)})
    request = PlanRequest(
        demand=demand_from_fleet(loaded.fleet),
        slo=loaded.fleet.slo,
        pricing=Pricing(),
        capacity={"mistral-7b": 4.0},
        measured=(path,),
    )
    result = plan(loaded, request)
    written = result.options[0]
    assert written.name == "as written"
    sources = {u.models[0]: (u.source, u.capacity_rps[u.models[0]]) for u in written.units}
    assert sources == {
        "llama-8b": ("measured (bench.json)", 1.5),
        "mistral-7b": ("given (--capacity)", 4.0),
    }
    resized = result.options[1]
    assert resized.units[0].replicas == math.ceil(3.2986 / 1.5)


def test_token_lengths_from_a_bench_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    workload = {
        "input_tokens": {"kind": "lognormal", "mean": 480.4, "std": 50, "low": 1, "high": None},
        "output_tokens": {"kind": "uniform", "mean": 1, "std": 0, "low": 100, "high": 300},
    }
    bench_file(path, {}, {"workload": workload})
    assert measured_token_means(path) == (480, 200)
    bare = tmp_path / "bare.json"
    bench_file(bare, {})
    with pytest.raises(PlanError, match="no workload token lengths"):
        measured_token_means(bare)


def seed_estimate(
    dau: float, per_user: float, throughput: float, price: float
) -> tuple[int, float]:
    """The seed's arithmetic as issue #7 describes it: the average rate only (no peak, no SLO),
    ceil(rate / throughput) GPUs per model from a flat throughput table, 720 hours a month."""
    rate = dau * per_user / 86_400
    gpus = 2 * max(math.ceil(rate / throughput), 1)  # one model each: isolated
    return gpus, gpus * price * 720


def test_seed_numbers_in_docs_planning() -> None:
    gpus, monthly = seed_estimate(10_000, 10, throughput=5.0, price=1.212)
    assert gpus == 2 and monthly == pytest.approx(1745.28)
    assert "$1,745" in (ROOT / "docs" / "planning.md").read_text()
