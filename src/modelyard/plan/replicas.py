"""Replica bounds for an autoscaler, from the planner's rules: each isolated model's capacity
per replica within the SLO, its share of the peak, and the availability minimum.

min = the availability rule (two replicas of the primary, one of the others), never below the
fleet's own `replicas:`; max = ceil(peak share / capacity), at least min; the autoscaler's
target = in-flight requests one replica holds at that capacity (capacity x mean E2E latency
there, Little's law).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelyard.fleet import LoadedFleet
from modelyard.placement import isolated_fraction
from modelyard.plan.capacity import Capacity, CapacityModel, demand_from_fleet, roles
from modelyard.traffic import model_shares, peak_rate_rps


@dataclass(frozen=True)
class ReplicaSizing:
    model: str
    capacity: Capacity  # one replica, requests/s within the SLO
    in_flight_per_replica: float
    peak_rps: float  # this model's share of the fleet's peak
    min_replicas: int
    max_replicas: int


def _in_flight(model: CapacityModel, name: str, gpu: str, fraction: float, cap: Capacity) -> float:
    """Requests in flight at the capacity rate: from the search's own run, or (a given or
    measured capacity) from one simulation at that rate."""
    e2e_ms = cap.e2e_mean_ms
    if e2e_ms is None:
        sub = model._sub_fleet({name: gpu}, {name: fraction}, shared=False)
        run = model._run(sub, cap.rps, {name: 1.0}, model.calibrations)
        e2e_ms = run.models[0].e2e_ms["mean"]
    return cap.rps * e2e_ms / 1000


def size_replicas(
    loaded: LoadedFleet, models: list[str], given: dict[str, float] | None = None
) -> tuple[dict[str, ReplicaSizing], list[str]]:
    """Sizing for `models` (isolated ones), and a note for each model that gets none."""
    fleet = loaded.fleet
    if fleet.slo.ttft_p99 is None and fleet.slo.e2e_p99 is None:
        return {}, ["no autoscaler: the fleet has no slo.ttft_p99 (or e2e_p99) to size one for"]
    demand = demand_from_fleet(fleet)
    peak_rps = peak_rate_rps(fleet.traffic)
    if peak_rps <= 0:
        return {}, ["no autoscaler: the fleet's traffic: gives no peak to size the maximum from"]
    primary = roles(fleet).primary
    shares = model_shares(fleet)  # the traffic rule plan, sim and bench share
    capacity = CapacityModel(
        loaded, fleet.slo, demand.input_tokens, demand.output_tokens, given=dict(given or {})
    )
    out: dict[str, ReplicaSizing] = {}
    notes: list[str] = []
    for name in models:
        entry = fleet.models[name]
        gpu = loaded.gpu_name(name)
        if gpu is None:
            continue
        fraction = isolated_fraction(loaded, name)
        cap = capacity.isolated(name, gpu, fraction)
        if not cap.feasible:
            notes.append(f"{name}: no autoscaler: no capacity within the SLO ({cap.reason})")
            continue
        rule = 2 if name == primary else 1
        minimum = max(rule, entry.replicas)
        peak = peak_rps * shares.get(name, 0.0)
        maximum = max(minimum, math.ceil(peak / cap.rps - 1e-9))
        in_flight = _in_flight(capacity, name, gpu, fraction, cap)
        out[name] = ReplicaSizing(name, cap, in_flight, peak, minimum, maximum)
        if rule > entry.replicas:
            notes.append(
                f"{name}: at least {minimum} replicas (the primary keeps two for availability; "
                f"the fleet says {entry.replicas})"
            )
    return out, notes
