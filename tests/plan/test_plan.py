"""The capacity and cost planner (issue #7): hand-computed cases, properties, sources, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.fleet import LoadedFleet, Slo, load_fleet
from modelyard.plan.capacity import (
    COARSE_BASE_RPS,
    Capacity,
    CapacityModel,
    Demand,
    demand_from_fleet,
    highest_passing,
    measured_capacities,
    roles,
)
from modelyard.plan.cost import (
    HOURS_PER_MONTH,
    PlanInputs,
    Pricing,
    isolated_option,
    mig_option,
    options_for,
    recommend,
    shared_option,
)
from modelyard.plan.errors import PlanError
from modelyard.plan.planner import PlanRequest, parse_sweep, plan
from tests.conftest import bench_file, target_summary

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "examples" / "fleet.yaml"
A10G = 1.006  # cheapest A10G price in the catalog (g5.xlarge), USD per GPU-hour


class TableCapacity(CapacityModel):
    """Capacities from a table, so the arithmetic can be checked by hand (memory stays real)."""

    table: dict[tuple[str, ...], float]

    def isolated(self, model: str, gpu_name: str, fraction: float = 0.9) -> Capacity:
        rps = self.table.get(("isolated", model, gpu_name), 0.0)
        return Capacity(rps, "table", "" if rps else "memory: not in table")

    def shared(self, gpu_name: str, fractions: dict[str, float], mix: dict[str, float]) -> Capacity:
        rps = self.table.get(("shared", gpu_name), 0.0)
        return Capacity(rps, "table", "" if rps else "memory: not in table")

    def mig(self, model: str, gpu_name: str, profile: str) -> Capacity:
        rps = self.table.get(("mig", model, gpu_name, profile), 0.0)
        return Capacity(rps, "table", "" if rps else "memory: no such slice in table")


@pytest.fixture(scope="module")
def loaded() -> LoadedFleet:
    return load_fleet(FLEET)


def table_model(loaded: LoadedFleet, table: dict[tuple[str, ...], float]) -> TableCapacity:
    model = TableCapacity(loaded, loaded.fleet.slo, 512, 256)
    model.table = table
    return model


def inputs(loaded: LoadedFleet, **demand: float | bool) -> PlanInputs:
    return PlanInputs(
        demand_from_fleet(loaded.fleet, **demand),
        roles(loaded.fleet),
        {"llama-8b": 2, "mistral-7b": 1},
        Pricing(),
    )


TABLE = {
    ("isolated", "llama-8b", "a10g"): 2.5,
    ("isolated", "mistral-7b", "a10g"): 2.5,
    ("shared", "a10g"): 1.0,
    ("isolated", "llama-8b", "a100-80gb"): 12.0,
    ("isolated", "mistral-7b", "a100-80gb"): 12.0,
    ("shared", "a100-80gb"): 9.0,
    ("mig", "llama-8b", "a100-80gb", "2g.20gb"): 2.0,
    ("mig", "mistral-7b", "a100-80gb", "1g.10gb"): 1.0,
}


def test_demand_arithmetic_and_bad_inputs(loaded: LoadedFleet) -> None:
    demand = demand_from_fleet(loaded.fleet)
    assert demand.average_rps == pytest.approx(10_000 * 10 / 86_400)
    assert demand.peak_rps == pytest.approx(3 * 10_000 * 10 / 86_400)
    assert roles(loaded.fleet).shares(0.05) == {"llama-8b": 0.95, "mistral-7b": 0.05}
    for bad, message in (
        ({"daily_active_users": -1}, "daily active users must be >= 0, got -1"),
        ({"fallback_rate": 1.5}, r"fallback rate must be within \[0, 1\], got 1.5"),
        ({"peak_factor": 0.5}, "peak factor"),
        ({"requests_per_user": -2}, "requests per user must be >= 0"),
    ):
        with pytest.raises(PlanError, match=message):
            demand_from_fleet(loaded.fleet, **bad)


def test_isolated_by_hand(loaded: LoadedFleet) -> None:
    option = isolated_option(
        table_model(loaded, TABLE), inputs(loaded), {"llama-8b": "a10g", "mistral-7b": "a10g"}, "x"
    )
    # peak 3.472 req/s: primary 95% = 3.299 / 2.5 -> 2 replicas; fallback 0.174 -> 1
    assert [u.replicas for u in option.units] == [2, 1]
    assert option.gpus == 3
    assert option.monthly_usd == pytest.approx(3 * A10G * HOURS_PER_MONTH)  # $2,203.14
    tokens = 10_000 * 10 / 86_400 * HOURS_PER_MONTH * 3600 * 256
    assert option.usd_per_million_output_tokens == pytest.approx(option.monthly_usd / tokens * 1e6)
    assert option.utilization == pytest.approx(3.4722 / (2 * 2.5 + 2.5), rel=1e-3)


def test_shared_by_hand(loaded: LoadedFleet) -> None:
    option = shared_option(table_model(loaded, TABLE), inputs(loaded), "a10g")
    # one A10G serves 1.0 req/s of the mix: 3.47 req/s -> 4 GPUs
    assert option.gpus == 4 and option.units[0].binding == "SLO"
    assert option.monthly_usd == pytest.approx(4 * A10G * HOURS_PER_MONTH)
    low = shared_option(table_model(loaded, TABLE), inputs(loaded, daily_active_users=100), "a10g")
    assert low.gpus == 2 and low.units[0].binding == "availability"  # primary's minimum of 2


def test_mig_by_hand(loaded: LoadedFleet) -> None:
    option = mig_option(table_model(loaded, TABLE), inputs(loaded), "a100-80gb")
    assert option is not None and option.feasible
    # llama on 2g.20gb: 3.30 / 2.0 -> 2; mistral on 1g.10gb: 0.17 / 1.0 -> 1; a GPU holds one each
    assert [u.device for u in option.units] == ["a100-80gb/2g.20gb", "a100-80gb/1g.10gb"]
    assert [u.replicas for u in option.units] == [2, 1]
    price = loaded.catalog.gpu("a100-80gb").price(None)
    assert price is not None
    assert option.gpus == 2
    assert option.monthly_usd == pytest.approx(2 * price.usd_per_gpu_hour * HOURS_PER_MONTH)
    assert mig_option(table_model(loaded, TABLE), inputs(loaded), "a10g") is None  # no MIG


def test_failover_sizes_the_fallback_for_all_traffic(loaded: LoadedFleet) -> None:
    option = isolated_option(
        table_model(loaded, TABLE),
        inputs(loaded, failover=True),
        {"llama-8b": "a10g", "mistral-7b": "a10g"},
        "x",
    )
    fallback = option.units[1]
    assert fallback.replicas == 2 and fallback.binding == "failover"  # 3.47 / 2.5


def test_memory_rules_options_out_with_the_reason(tmp_path: Path) -> None:
    # a bf16 70B fallback fits no A10G: isolated and shared options are ruled out by memory.fit
    path = tmp_path / "big.yaml"
    path.write_text(
        "name: big\nmodels:\n"
        "  small: {catalog: llama-3.1-8b, quant: awq-w4-g128, gpu: a10g, max_model_len: 4096}\n"
        "  large: {catalog: llama-3.1-70b, quant: bf16, gpu: a100-80gb, max_model_len: 4096}\n"
        "routes:\n  - {targets: [small, large]}\n"
        "slo: {ttft_p99: 800ms}\ntraffic: {daily_active_users: 1000, requests_per_user: 10,"
        " fallback_rate: 0.05}\n"
    )
    big = load_fleet(path)
    capacity = CapacityModel(big, big.fleet.slo, 512, 256)
    plan_inputs = PlanInputs(
        demand_from_fleet(big.fleet), roles(big.fleet), {"small": 2, "large": 1}, Pricing()
    )
    isolated = isolated_option(capacity, plan_inputs, {"small": "a10g", "large": "a10g"}, "x")
    assert not isolated.feasible and isolated.binding == "memory"
    assert "memory: large on a10g" in isolated.reason
    shared = shared_option(capacity, plan_inputs, "a10g")
    assert not shared.feasible and shared.binding == "memory"
    assert "large cannot fit on a10g (24 GB)" in shared.reason
    # ruled out by the memory model before any simulation of it
    assert capacity.isolated("large", "a10g").source == "memory"


def test_recommendation_is_the_cheapest_feasible_and_says_why(loaded: LoadedFleet) -> None:
    capacity = table_model(loaded, TABLE)
    options = options_for(capacity, inputs(loaded), ["a10g", "a100-80gb"], optimize=True)
    best, why = recommend(options)
    assert best is not None
    feasible = [o for o in options if o.feasible]
    assert best.monthly_usd == min(o.monthly_usd for o in feasible)
    assert best.name in why and "next:" in why


def test_no_feasible_option_explains(loaded: LoadedFleet) -> None:
    options = options_for(table_model(loaded, {}), inputs(loaded), ["a10g"], optimize=False)
    best, why = recommend(options)
    assert best is None and why.startswith("no option meets the SLO")


# --- properties ---

positive = st.floats(min_value=0.05, max_value=50, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(users=st.floats(0, 5e6), extra=st.floats(0, 5e6), cap=positive, shared=positive)
def test_more_traffic_never_needs_fewer_gpus(
    loaded: LoadedFleet, users: float, extra: float, cap: float, shared: float
) -> None:
    table = {
        ("isolated", "llama-8b", "a10g"): cap,
        ("isolated", "mistral-7b", "a10g"): cap,
        ("shared", "a10g"): shared,
    }
    capacity = table_model(loaded, table)
    gpus = {"llama-8b": "a10g", "mistral-7b": "a10g"}
    few = inputs(loaded, daily_active_users=users)
    many = inputs(loaded, daily_active_users=users + extra)
    assert (
        isolated_option(capacity, many, gpus, "").gpus
        >= isolated_option(capacity, few, gpus, "").gpus
    )
    assert shared_option(capacity, many, "a10g").gpus >= shared_option(capacity, few, "a10g").gpus


@settings(max_examples=60, deadline=None)
@given(price=st.floats(0.1, 50), cut=st.floats(0.0, 0.99), users=st.floats(0, 1e6))
def test_a_cheaper_price_never_raises_cost(
    loaded: LoadedFleet, price: float, cut: float, users: float
) -> None:
    capacity = table_model(loaded, TABLE)
    base = inputs(loaded, daily_active_users=users)
    dear = replace(base, pricing=Pricing(overrides={"a10g": price, "a100-80gb": price * 3}))
    cheap = replace(
        base, pricing=Pricing(overrides={"a10g": price * (1 - cut), "a100-80gb": price * 3})
    )
    for options in (["a10g"], ["a10g", "a100-80gb"]):
        a, _ = recommend(options_for(capacity, dear, options, optimize=True))
        b, _ = recommend(options_for(capacity, cheap, options, optimize=True))
        assert a is not None and b is not None
        assert b.monthly_usd <= a.monthly_usd + 1e-6


@settings(max_examples=40, deadline=None)
@given(
    users=st.floats(0, 2e6),
    caps=st.lists(positive, min_size=6, max_size=6),
    discount=st.floats(0, 0.9),
)
def test_optimizer_choice_is_never_more_expensive_than_any_printed_option(
    loaded: LoadedFleet, users: float, caps: list[float], discount: float
) -> None:
    table = dict(zip(list(TABLE)[:6], caps, strict=True))
    capacity = table_model(loaded, table)
    plan_inputs = replace(
        inputs(loaded, daily_active_users=users), pricing=Pricing(discount=discount)
    )
    options = options_for(capacity, plan_inputs, ["a10g", "a100-80gb"], optimize=True)
    best, _ = recommend(options)
    assert best is not None
    assert all(best.monthly_usd <= o.monthly_usd + 1e-6 for o in options if o.feasible)


@settings(max_examples=80, deadline=None)
@given(threshold=st.floats(0.01, 5000))
def test_capacity_search_finds_the_threshold_within_5_percent(threshold: float) -> None:
    found = highest_passing(lambda rate: rate <= threshold)
    if threshold < COARSE_BASE_RPS:
        assert found == 0.0
    else:
        assert found <= threshold and found >= threshold / 2 ** (1 / 14) - 1e-9


@settings(max_examples=5, deadline=None)
@given(ttft=st.sampled_from([0.3, 0.5, 0.8, 1.5, 3.0]), tighter=st.floats(0.3, 0.95))
def test_a_tighter_slo_never_needs_fewer_gpus_simulated(
    loaded: LoadedFleet, ttft: float, tighter: float
) -> None:
    def gpus(slo_ttft: float) -> int:
        slo = Slo(ttft_p99=slo_ttft, tpot_p99=0.06)
        capacity = CapacityModel(loaded, slo, 512, 256)
        option = isolated_option(
            capacity, inputs(loaded), {"llama-8b": "a10g", "mistral-7b": "a10g"}, ""
        )
        return option.gpus if option.feasible else 10**9

    assert gpus(ttft * tighter) >= gpus(ttft)


# --- capacity sources ---


def test_simulated_capacity_meets_the_slo_and_the_floor_is_reported(loaded: LoadedFleet) -> None:
    capacity = CapacityModel(loaded, loaded.fleet.slo, 512, 256)
    cap = capacity.isolated("llama-8b", "a10g")
    assert cap.source == "simulated" and cap.rps > 0.5
    assert cap.ttft_p99_ms is not None and cap.ttft_p99_ms <= 800
    impossible = CapacityModel(loaded, Slo(ttft_p99=0.02), 512, 256)
    floor = impossible.isolated("llama-8b", "a10g")
    assert floor.rps == 0
    assert "SLO impossible" in floor.reason and "even at zero load > SLO 20 ms" in floor.reason


def test_measured_capacity_is_the_best_run_within_the_slo(tmp_path: Path) -> None:
    paths = []
    for rate, ttft, errors in ((1.0, 300, 0), (2.0, 700, 0), (3.0, 900, 0), (2.5, 500, 3)):
        path = tmp_path / f"r{rate}.json"
        bench_file(path, {"llama-8b": target_summary(rate, ttft, errors)})
        paths.append(path)
    best = measured_capacities(paths, Slo(ttft_p99=0.8, tpot_p99=0.06))
    assert best == {"llama-8b": (2.0, "measured (r2.0.json)")}  # 3.0 misses TTFT, 2.5 had errors


def test_plan_states_each_capacity_source(loaded: LoadedFleet, tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    bench_file(path, {"llama-8b": target_summary(1.5, 500)})
    request = PlanRequest(
        demand=demand_from_fleet(loaded.fleet),
        slo=loaded.fleet.slo,
        pricing=Pricing(),
        min_replicas={},
        capacity={"mistral-7b": 4.0},
        measured=(path,),
    )
    result = plan(loaded, request)
    isolated = next(o for o in result.options if o.name == "isolated (fleet's GPUs)")
    sources = {u.models[0]: (u.capacity_source, u.capacity_rps) for u in isolated.units}
    assert sources == {
        "llama-8b": ("measured (bench.json)", 1.5),
        "mistral-7b": ("given (--capacity)", 4.0),
    }
    assert isolated.units[0].replicas == math.ceil(3.2986 / 1.5)


def test_token_lengths_from_a_bench_file(tmp_path: Path) -> None:
    from modelyard.plan.capacity import measured_token_means

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


def test_sweep_parsing() -> None:
    name, points = parse_sweep("daily_active_users=1e3..1e6")
    assert name == "daily_active_users" and len(points) == 13
    assert points[0] == pytest.approx(1e3) and points[-1] == pytest.approx(1e6)
    assert parse_sweep("peak-factor=1,2,4") == ("peak_factor", [1.0, 2.0, 4.0])
    with pytest.raises(PlanError, match="cannot sweep 'gpus'"):
        parse_sweep("gpus=1..2")
    with pytest.raises(PlanError, match="need 0 < LOW < HIGH"):
        parse_sweep("daily_active_users=5..1")


# --- the seed article's planner, for docs/planning.md ---


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
    text = (ROOT / "docs" / "planning.md").read_text()
    assert "$1,745" in text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args], capture_output=True, text=True, check=False
    )


def test_cli_plan_json_sweep_and_errors(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    done = _cli("plan", str(FLEET), "--sweep", "daily_active_users=1e3..1e5", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "recommended:" in done.stdout and "why:" in done.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == "modelyard.plan/1" and len(data["sweep"]["points"]) == 13
    assert out.with_suffix(".png").stat().st_size > 10_000
    as_json = _cli(
        "plan", str(FLEET), "--json", "--capacity", "llama-8b=3", "--capacity", "mistral-7b=3"
    )
    assert json.loads(as_json.stdout)["recommended"] == "isolated (fleet's GPUs)"
    for args, message in (
        (["--fallback-rate", "1.5"], "error: fallback rate must be within [0, 1], got 1.5"),
        (["--daily-active-users", "-5"], "error: daily active users must be >= 0, got -5"),
        (["--cloud", "gcp"], "error: unknown cloud 'gcp'"),
        (["--gpu", "a10"], "error: unknown GPU 'a10' (did you mean 'a10g'?"),
        (["--price", "a10g"], "error: --price a10g: expected NAME=NUMBER"),
        (["--slo-ttft-ms", "20"], "SLO impossible: llama-8b TTFT p99 is"),
    ):
        failed = _cli("plan", str(FLEET), *args)
        assert failed.returncode == 1, (args, failed.stdout)
        assert message in failed.stderr, (args, failed.stderr)
        assert "Traceback" not in failed.stderr


def test_demand_dataclass_is_the_single_source(loaded: LoadedFleet) -> None:
    demand = Demand(1000, 10, 2, 0.1, 100, 50)
    assert demand.peak_rps == pytest.approx(1000 * 10 / 86_400 * 2)
