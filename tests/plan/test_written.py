"""plan/written.py: the fleet as written — its own devices, sharing modes, fractions, TP and
replica counts — checked against the demand, and the same layout resized."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.fleet import load_fleet
from modelyard.placement import device_plans
from modelyard.plan.cost import Option, finish
from modelyard.plan.demand import demand_from_fleet
from modelyard.plan.written import fleet_options
from tests.plan.helpers import THREE_MODELS, builder, table_capacity

TABLE = {
    ("shared", "h100-sxm"): 60.0,  # the group at its mix: all llama (mistral is standby)
    ("isolated", "coder", "l4"): 5.0,
}


def _options(
    path: Path, table: dict[tuple[str, ...], float], failover: bool = False, **minimums: int
) -> list[Option]:
    loaded = load_fleet(path)
    demand = demand_from_fleet(loaded.fleet, failover=failover)
    build = builder(table_capacity(loaded, table), demand, min_replicas=minimums or None)
    inputs = build.inputs
    return [
        finish(o, inputs.demand, inputs.models, loaded.catalog, inputs.pricing)
        for o in fleet_options(build)
    ]


def test_as_written_is_the_fleets_own_devices(write_fleet: Callable[[str], Path]) -> None:
    path = write_fleet(THREE_MODELS)
    written, resized = _options(path, TABLE)
    assert written.kind == "as written" and resized.kind == "fleet layout"
    group, coder = written.units
    assert group.sharing == "time-sliced" and group.gpu == "h100-sxm" and group.replicas == 1
    assert [(e.model, e.memory_fraction) for e in group.engines] == [
        ("llama-8b", 0.6),
        ("mistral-7b", 0.3),
    ]
    assert coder.label == "l4" and coder.replicas == 2 and coder.sized_by == ["as written"]
    devices = device_plans(load_fleet(path))
    assert written.gpus == sum(d.gpu_count for d in devices) == 3


def test_as_written_says_which_constraint_binds(write_fleet: Callable[[str], Path]) -> None:
    written, resized = _options(write_fleet(THREE_MODELS), TABLE)
    # coder: 13.89 req/s at the peak over 2 replicas of 5 req/s; llama: 1 replica, minimum 2
    assert not written.feasible and written.verdict.blocked_by == "capacity"
    assert "coder: 2 replica(s) serve 10.00 req/s within the SLO, 13.89 needed" in (
        written.verdict.reason
    )
    assert "llama-8b: 1 replica(s), the availability minimum is 2" in written.verdict.reason
    assert resized.feasible
    assert [u.replicas for u in resized.units] == [2, 3]
    assert resized.units[0].sized_by == ["availability"]  # 55.6 / 60 -> 1; minimum 2
    assert resized.units[1].sized_by == ["SLO"]  # 13.89 / 5 -> 3, more than its minimum of 2


def test_as_written_meets_it_when_replicas_suffice(write_fleet: Callable[[str], Path]) -> None:
    table = {**TABLE, ("isolated", "coder", "l4"): 8.0}
    written, _ = _options(write_fleet(THREE_MODELS), table, **{"llama-8b": 1})
    assert written.feasible and written.monthly_usd == pytest.approx(
        (6.88 + 2 * 0.8048) * 730, rel=1e-3
    )


def test_mps_mig_and_tensor_parallel_as_written(write_fleet: Callable[[str], Path]) -> None:
    text = THREE_MODELS.replace(
        "      memory_fractions: {llama-8b: 0.6, mistral-7b: 0.3}\n",
        "      sharing: mig\n      mig_profiles: {llama-8b: 3g.40gb}\n",
    ).replace("quant: awq-w4-g128, gpu: l4", "gpu: h100-sxm, tensor_parallel_size: 2")
    table = {
        ("mig", "llama-8b", "h100-sxm", "3g.40gb"): 20.0,
        ("mig", "mistral-7b", "h100-sxm", "1g.20gb"): 1.0,
        ("isolated", "coder", "h100-sxm"): 30.0,
    }
    written, resized = _options(write_fleet(text), table)
    group, coder = written.units
    assert group.sharing == "mig"
    assert [(e.model, e.mig_profile) for e in group.engines] == [
        ("llama-8b", "3g.40gb"),
        ("mistral-7b", "1g.20gb"),  # not named: the smallest slice it fits, and a note says so
    ]
    assert "MIG profile chosen by the planner (the group names none): mistral-7b 1g.20gb" in (
        written.notes
    )
    assert coder.gpus_per_replica == 2 and coder.gpus == 2 * 2  # 2 replicas of TP=2
    assert resized.units[0].capacity_rps == {"llama-8b": 20.0, "mistral-7b": 1.0}
    mps = THREE_MODELS.replace(
        "      memory_fractions:", "      sharing: mps\n      memory_fractions:"
    )
    assert _options(write_fleet(mps, "mps.yaml"), TABLE)[0].units[0].sharing == "mps"


def test_failover_checks_what_a_standby_member_serves_alone(
    write_fleet: Callable[[str], Path],
) -> None:
    # mistral takes over llama's 55.56 req/s; alone on the shared H100 it serves 20
    table = {**TABLE, ("shared", "h100-sxm", "mistral-7b"): 20.0, ("isolated", "coder", "l4"): 8.0}
    written, resized = _options(write_fleet(THREE_MODELS), table, failover=True)
    assert not written.feasible and written.verdict.blocked_by == "capacity"
    assert "mistral-7b: 1 replica(s) serve 20.00 req/s within the SLO, 55.56 needed with " in (
        written.verdict.reason
    )
    group = resized.units[0]
    assert group.replicas == 3 and group.sized_by == ["failover"]
    assert group.failover_capacity_rps == {
        "llama-8b": 60.0,
        "mistral-7b": 20.0,
    }  # llama backs up the coder
