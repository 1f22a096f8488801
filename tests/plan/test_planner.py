"""The planner end to end on table capacities (hand-checkable arithmetic and monotone
properties), on the simulator (a looser SLO never costs more), and through the CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.fleet import LoadedFleet, Slo, load_fleet
from modelyard.plan.cost import Option, Pricing
from modelyard.plan.demand import demand_from_fleet
from modelyard.plan.errors import PlanError
from modelyard.plan.planner import PlanRequest, plan
from modelyard.plan.recommend import diagnose, recommend
from modelyard.plan.search import options_for
from modelyard.plan.sweep import parse_sweep
from modelyard.units import HOURS_PER_MONTH
from tests.conftest import Cli
from tests.plan.helpers import (
    A10G,
    EXAMPLE,
    THREE_MODELS,
    builder,
    simulated_capacity,
    table_capacity,
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


@pytest.fixture(scope="module")
def example() -> LoadedFleet:
    return load_fleet(EXAMPLE)


def _plan(
    loaded: LoadedFleet,
    table: dict[tuple[str, ...], float],
    gpus: list[str],
    optimize: bool = True,
    pricing: Pricing | None = None,
    **demand: float,
) -> list[Option]:
    build = builder(
        table_capacity(loaded, table), demand_from_fleet(loaded.fleet, **demand), pricing
    )
    return options_for(build, gpus, optimize)


def _named(options: list[Option], name: str) -> Option:
    return next(o for o in options if o.name == name)


def test_the_example_by_hand(example: LoadedFleet) -> None:
    options = _plan(example, TABLE, ["a10g", "a100-80gb"])
    assert options[0].name == "as written"  # always first
    # peak 3.472 req/s: llama 95% = 3.299 / 2.5 -> 2 replicas; mistral 0.174 -> 1
    resized = _named(options, "fleet layout, resized")
    assert [u.replicas for u in resized.units] == [2, 1]
    assert resized.monthly_usd == pytest.approx(3 * A10G * HOURS_PER_MONTH)
    tokens = 10_000 * 10 / 86_400 * HOURS_PER_MONTH * 3600 * 256
    assert resized.usd_per_million_output_tokens == pytest.approx(
        resized.monthly_usd / tokens * 1e6
    )
    assert resized.gpu_utilization == pytest.approx((3.2986 + 0.1736) / 2.5 / 3, rel=1e-3)
    assert resized.headroom == pytest.approx(1 - 3.2986 / 5.0, rel=1e-3)
    shared = _named(options, "shared a10g")
    assert shared.gpus == 4 and shared.sized_by == ["SLO"]  # 3.47 req/s at 1.0 per GPU
    written = options[0]
    assert written.gpus == 2 and written.verdict.blocked_by == "capacity"
    assert written.monthly_usd == pytest.approx(2 * A10G * HOURS_PER_MONTH)


def test_mig_is_packed_by_gpu_not_by_slice(example: LoadedFleet) -> None:
    mig = _named(_plan(example, TABLE, ["a100-80gb"]), "mig a100-80gb")
    # llama needs 3.30 req/s on at least 2 GPUs, mistral 0.17 on 1: two GPUs either way, and
    # of the two-GPU packings the one with the most headroom: a whole A100 (12 req/s) beside a
    # MIG A100 with three 2g slices of llama (6) and a 1g slice of mistral (1)
    assert mig.feasible and mig.gpus == 2
    assert sorted(u.label for u in mig.units) == [
        "a100-80gb (whole GPU)",
        "a100-80gb MIG [3x2g.20gb llama-8b + 1g.10gb mistral-7b]",
    ]
    assert mig.headroom == pytest.approx(1 - 3.2986 / 18.0, rel=1e-3)


def test_mixed_layout_shares_the_small_models_and_isolates_the_primary(
    write_fleet: Callable[[str], Path],
) -> None:
    small = "mistral-7b: {catalog: mistral-7b-instruct-v0.2, quant: awq-w4-g64, gpu: h100-sxm,"
    text = THREE_MODELS.replace(
        "mistral-7b: {catalog: mistral-7b-instruct-v0.2, gpu: h100-sxm,", small
    )
    loaded = load_fleet(write_fleet(text))
    table = {
        ("isolated", "llama-8b", "h100-sxm"): 40.0,
        ("isolated", "mistral-7b", "h100-sxm"): 40.0,
        ("isolated", "coder", "h100-sxm"): 40.0,
        ("isolated", "llama-8b", "l4"): 1.0,
        ("isolated", "mistral-7b", "l4"): 4.0,
        ("isolated", "coder", "l4"): 4.0,
        ("shared", "l4"): 3.5,  # all coder traffic (mistral is standby): a little under alone
    }
    options = _plan(loaded, table, ["h100-sxm", "l4"])
    mixed = next(o for o in options if o.kind == "mixed")
    assert mixed.name == "mixed: llama-8b on h100-sxm; mistral-7b + coder on l4"
    # llama: 2 H100s (its minimum); the pair: ceil(13.89 / 3.5) = 4 L4s, one fewer than the
    # 4 + 1 they need apart
    assert [(u.gpu, u.gpus) for u in mixed.units] == [("h100-sxm", 2), ("l4", 4)]
    best, why = recommend(options)
    assert best is mixed and "cheapest option that meets the SLO" in why
    assert all(best.monthly_usd <= o.monthly_usd for o in options if o.feasible)


def test_no_option_says_what_binds_per_model(example: LoadedFleet) -> None:
    options = _plan(example, {}, ["a10g"], optimize=False)
    best, why = recommend(options)
    assert best is None and why == "no option meets the SLO"
    build = builder(table_capacity(example, {}))
    lines = diagnose(options, build.inputs.models)
    assert lines[0].startswith("llama-8b — slo: isolated/llama-8b/a10g: not in the table")
    assert lines[1].startswith("mistral-7b — slo:")


def test_a_missing_price_is_a_typed_verdict(example: LoadedFleet) -> None:
    options = _plan(
        example, TABLE, ["a10g"], optimize=False, pricing=Pricing(cloud="aws-capacity-block")
    )
    resized = _named(options, "fleet layout, resized")
    assert resized.verdict.blocked_by == "price"
    assert "give --price a10g=USD" in resized.verdict.reason


positive = st.floats(min_value=0.05, max_value=50, allow_nan=False)


@pytest.mark.slow  # a property over many simulated plans; make test runs it
@settings(max_examples=40, deadline=None)
@given(
    users=st.floats(0, 5e6),
    extra=st.floats(0, 5e6),
    caps=st.lists(positive, min_size=8, max_size=8),
)
def test_more_traffic_never_needs_fewer_gpus_nor_costs_less(
    example: LoadedFleet, users: float, extra: float, caps: list[float]
) -> None:
    table = dict(zip(TABLE, caps, strict=True))
    few = _plan(example, table, ["a10g", "a100-80gb"], daily_active_users=users)
    many = _plan(example, table, ["a10g", "a100-80gb"], daily_active_users=users + extra)
    for option in few:
        if option.feasible and option.kind not in ("as written", "mixed"):
            assert _named(many, option.name).gpus >= option.gpus, option.name
    cheap, _ = recommend(few)
    dear, _ = recommend(many)
    assert cheap is not None and dear is not None
    assert dear.monthly_usd >= cheap.monthly_usd - 1e-6


@settings(max_examples=40, deadline=None)
@given(
    users=st.floats(0, 2e6),
    caps=st.lists(positive, min_size=8, max_size=8),
    discount=st.floats(0, 0.9),
)
def test_the_recommendation_never_costs_more_than_a_printed_option(
    example: LoadedFleet, users: float, caps: list[float], discount: float
) -> None:
    table = dict(zip(TABLE, caps, strict=True))
    options = _plan(
        example,
        table,
        ["a10g", "a100-80gb"],
        pricing=Pricing(discount=discount),
        daily_active_users=users,
    )
    best, _ = recommend(options)
    assert best is not None
    assert all(best.monthly_usd <= o.monthly_usd + 1e-6 for o in options if o.feasible)


@settings(max_examples=40, deadline=None)
@given(price=st.floats(0.1, 50), cut=st.floats(0.0, 0.99), users=st.floats(0, 1e6))
def test_a_cheaper_price_never_raises_cost(
    example: LoadedFleet, price: float, cut: float, users: float
) -> None:
    dear = Pricing(overrides={"a10g": price, "a100-80gb": price * 3})
    cheap = replace(dear, overrides={"a10g": price * (1 - cut), "a100-80gb": price * 3})
    a, _ = recommend(
        _plan(example, TABLE, ["a10g", "a100-80gb"], pricing=dear, daily_active_users=users)
    )
    b, _ = recommend(
        _plan(example, TABLE, ["a10g", "a100-80gb"], pricing=cheap, daily_active_users=users)
    )
    assert a is not None and b is not None
    assert b.monthly_usd <= a.monthly_usd + 1e-6


@pytest.mark.slow  # a property over many simulated plans; make test runs it
@settings(max_examples=4, deadline=None)
@given(ttft=st.sampled_from([0.3, 0.8, 3.0]), tighter=st.floats(0.3, 0.95))
def test_a_looser_slo_never_needs_more_gpus_simulated(
    example: LoadedFleet, ttft: float, tighter: float
) -> None:
    def gpus(slo_ttft: float) -> float:
        capacity = simulated_capacity(example, Slo(ttft_p99=slo_ttft, tpot_p99=0.06))
        option = _named(options_for(builder(capacity), ["a10g"], False), "fleet layout, resized")
        return option.gpus if option.feasible else math.inf

    assert gpus(ttft) <= gpus(ttft * tighter)


def test_sweep_parsing() -> None:
    name, points = parse_sweep("daily_active_users=1e3..1e6")
    assert name == "daily_active_users" and len(points) == 13
    assert points[0] == pytest.approx(1e3) and points[-1] == pytest.approx(1e6)
    assert parse_sweep("peak-factor=1,2,4") == ("peak_factor", [1.0, 2.0, 4.0])
    with pytest.raises(PlanError, match="cannot sweep 'gpus'"):
        parse_sweep("gpus=1..2")
    with pytest.raises(PlanError, match="need 0 < LOW < HIGH"):
        parse_sweep("daily_active_users=5..1")


def test_a_plan_counts_its_simulations_and_fits_and_caches_across_a_sweep(
    example: LoadedFleet,
) -> None:
    request = PlanRequest(
        demand=demand_from_fleet(example.fleet),
        slo=example.fleet.slo,
        pricing=Pricing(),
        capacity={"llama-8b": 3.0, "mistral-7b": 3.0},
    )
    once = plan(example, request)
    swept = plan(example, replace(request, sweep=("daily_active_users", [1e3, 1e4, 1e5])))
    assert once.simulations > 0 and once.memory_fits > 0  # the shared a10g option simulates
    assert swept.simulations == once.simulations  # capacities do not depend on the traffic
    assert [p["recommended"] for p in (swept.sweep or {})["points"]][-1] is not None


def test_cli_plan_json_mix_and_errors(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "plan.json"
    given = ["--capacity", "llama-8b=3", "--capacity", "mistral-7b=3"]
    done = cli("plan", str(EXAMPLE), *given, "--mix", "llama-8b=0.5,mistral-7b=0.5", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "the fleet as written" in done.stdout and "why:" in done.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == "modelyard.plan/2"
    assert data["options"][0]["name"] == "as written"
    assert data["models"]["mistral-7b"]["share"] == pytest.approx(0.5)
    assert data["demand"]["mix"] == {"llama-8b": 0.5, "mistral-7b": 0.5}
    for args, message in (
        (["--fallback-rate", "1.5"], "error: fallback rate must be within [0, 1], got 1.5"),
        (["--daily-active-users", "-5"], "error: daily active users must be >= 0, got -5"),
        (["--cloud", "gcp"], "error: unknown cloud 'gcp'"),
        (["--gpu", "a10"], "error: unknown GPU 'a10' (did you mean 'a10g'?"),
        (["--price", "a10g"], "error: --price a10g: expected NAME=NUMBER"),
        (["--mix", "llama=1"], "error: --mix llama: not a model of the fleet"),
    ):
        failed = cli("plan", str(EXAMPLE), *args)
        assert failed.returncode == 1, (args, failed.stdout)
        assert message in failed.stderr, (args, failed.stderr)
        assert "Traceback" not in failed.stderr
    # the command ran and its answer is no: exit 3, with what binds for each model
    floor = cli("plan", str(EXAMPLE), "--slo-ttft-ms", "20")
    assert floor.returncode == 3, floor.stderr
    assert "no: no option meets the SLO" in floor.stderr
    assert "llama-8b — slo: SLO impossible: llama-8b TTFT p99 is" in floor.stderr
