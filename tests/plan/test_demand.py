"""plan/demand.py: each model's demand from the one traffic rule, --mix, standby, failover."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.fleet import load_fleet
from modelyard.plan.demand import demand_from_fleet, model_demands
from modelyard.plan.errors import PlanError
from modelyard.traffic import model_shares
from tests.plan.helpers import EXAMPLE, THREE_MODELS

PEAK = 10_000 * 10 / 86_400 * 3


def test_the_example_fleet_peak_and_shares_follow_the_traffic_rule() -> None:
    fleet = load_fleet(EXAMPLE).fleet
    demand = demand_from_fleet(fleet)
    assert demand.peak_rps == pytest.approx(PEAK)
    assert demand.average_rps == pytest.approx(PEAK / 3)
    models = model_demands(fleet, demand).models
    assert {m: d.share for m, d in models.items()} == model_shares(fleet)
    assert models["llama-8b"].rps == pytest.approx(0.95 * PEAK)
    assert models["mistral-7b"].rps == pytest.approx(0.05 * PEAK)


def test_task_routes_are_planned_and_a_zero_share_fallback_is_standby(
    write_fleet: Callable[[str], Path],
) -> None:
    fleet = load_fleet(write_fleet(THREE_MODELS)).fleet
    models = model_demands(fleet, demand_from_fleet(fleet)).models
    assert list(models) == ["llama-8b", "mistral-7b", "coder"]  # coder only via task: code
    assert models["coder"].share == pytest.approx(0.2)
    assert models["llama-8b"].share == pytest.approx(0.8)
    assert models["mistral-7b"].standby and models["mistral-7b"].rps == 0


def test_a_fallback_rate_override_moves_share_to_the_fallback() -> None:
    fleet = load_fleet(EXAMPLE).fleet
    models = model_demands(fleet, demand_from_fleet(fleet, fallback_rate=0.2)).models
    assert models["mistral-7b"].share == pytest.approx(0.2)
    assert models["llama-8b"].share == pytest.approx(0.8)


def test_mix_replaces_the_shares_normalised_and_checked() -> None:
    fleet = load_fleet(EXAMPLE).fleet
    demand = demand_from_fleet(fleet, mix={"llama-8b": 3, "mistral-7b": 1})
    models = model_demands(fleet, demand).models
    assert models["llama-8b"].share == pytest.approx(0.75)
    assert models["mistral-7b"].rps == pytest.approx(0.25 * PEAK)
    with pytest.raises(PlanError, match=r"--mix llama: not a model of the fleet"):
        demand_from_fleet(fleet, mix={"llama": 1})
    with pytest.raises(PlanError, match="add up to 0"):
        demand_from_fleet(fleet, mix={"llama-8b": 0})


def test_failover_absorbs_the_primary_share_routed_through_the_fallback(
    write_fleet: Callable[[str], Path],
) -> None:
    fleet = load_fleet(write_fleet(THREE_MODELS)).fleet
    demand = demand_from_fleet(fleet, failover=True)
    models = model_demands(fleet, demand).models
    peak = demand.peak_rps
    # mistral backs up llama on the default route: all of llama's 0.8 (llama is primary of
    # the default route only); llama backs up the coder: the coder's 0.2
    assert models["mistral-7b"].failover_rps == pytest.approx(0.8 * peak)
    assert models["llama-8b"].failover_rps == pytest.approx(0.2 * peak)
    assert models["llama-8b"].need_rps == pytest.approx(1.0 * peak)
    assert models["coder"].failover_rps == 0


def test_models_no_route_reaches_are_noted_not_planned(write_fleet: Callable[[str], Path]) -> None:
    text = THREE_MODELS.replace("  - {match: {task: code}, targets: [coder, llama-8b]}\n", "")
    text = text.replace(", tasks: {code: 0.2}", "")
    fleet = load_fleet(write_fleet(text)).fleet
    found = model_demands(fleet, demand_from_fleet(fleet))
    assert found.planned == ["llama-8b", "mistral-7b"]
    assert found.notes == ["coder: no route reaches it and --mix gives it no share; not planned"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"daily_active_users": -1}, "daily active users must be >= 0, got -1"),
        ({"fallback_rate": 1.5}, r"fallback rate must be within \[0, 1\], got 1.5"),
        ({"peak_factor": 0.5}, r"peak factor \(peak / average\) must be >= 1, got 0.5"),
        ({"requests_per_user": -2}, "requests per user must be >= 0, got -2"),
    ],
)
def test_bad_traffic_gets_one_line(bad: dict[str, float], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        demand_from_fleet(load_fleet(EXAMPLE).fleet, **bad)
