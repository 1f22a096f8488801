"""Replica bounds for an autoscaler, from the planner's rules: each isolated model's capacity
per replica within the SLO, its share of the peak, and the availability minimum.

min = the availability rule (two replicas of a primary, one of the others), never below the
fleet's own `replicas:`; max = ceil(peak share / capacity), at least min; the autoscaler's
target = in-flight requests one replica holds at that capacity (capacity x mean E2E latency
there, Little's law).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelyard.fleet import LoadedFleet
from modelyard.placement import isolated_fraction
from modelyard.plan.capacity import Capacity, CapacityModel
from modelyard.plan.demand import demand_from_fleet, model_demands
from modelyard.plan.fits import MemoryFits
from modelyard.plan.planner import default_min_replicas
from modelyard.plan.simulator import PlanSimulator, SimDevice, SimEngine, SimLoad


@dataclass(frozen=True)
class ReplicaSizing:
    model: str
    capacity: Capacity  # one replica, requests/s within the SLO
    in_flight_per_replica: float
    peak_rps: float  # this model's share of the fleet's peak
    min_replicas: int
    max_replicas: int


def _in_flight(model: CapacityModel, name: str, gpu: str, cap: Capacity) -> float:
    """Requests in flight at the capacity rate: from the search's own run, or (a given or
    measured capacity) from one simulation at that rate."""
    e2e_ms = cap.e2e_mean_ms
    if e2e_ms is None:
        tp = model.loaded.fleet.models[name].tensor_parallel_size
        spec = model.loaded.catalog.gpu(gpu)
        engine = SimEngine(name, isolated_fraction(model.loaded, name), gpu, spec, tp)
        load = SimLoad(cap.rps, {name: 1.0}, model.input_tokens, model.output_tokens, model.seed)
        (latency,) = model.simulator.latencies(SimDevice(gpu, "isolated", (engine,)), load)
        model.simulator.record([latency])
        e2e_ms = latency.e2e_mean_ms
    return cap.rps * e2e_ms / 1000


def size_replicas(
    loaded: LoadedFleet, models: list[str], given: dict[str, float] | None = None
) -> tuple[dict[str, ReplicaSizing], list[str]]:
    """Sizing for `models` (isolated ones), and a note for each model that gets none."""
    fleet = loaded.fleet
    if fleet.slo.ttft_p99 is None and fleet.slo.e2e_p99 is None:
        return {}, ["no autoscaler: the fleet has no slo.ttft_p99 (or e2e_p99) to size one for"]
    demand = demand_from_fleet(fleet)
    if demand.peak_rps <= 0:
        return {}, ["no autoscaler: the fleet's traffic: gives no peak to size the maximum from"]
    planned = model_demands(fleet, demand)  # the traffic rule plan, sim and bench share
    minimums = default_min_replicas(loaded, planned)
    capacity = CapacityModel(
        loaded,
        fleet.slo,
        demand.traffic.input_tokens,
        demand.traffic.output_tokens,
        PlanSimulator(loaded),
        MemoryFits(loaded),
        given=dict(given or {}),
    )
    out: dict[str, ReplicaSizing] = {}
    notes: list[str] = []
    for name in models:
        entry = fleet.models[name]
        gpu = loaded.gpu_name(name)
        if gpu is None:
            continue
        cap = capacity.isolated(name, gpu, entry.tensor_parallel_size)
        if not cap.feasible:
            reason = cap.verdict.reason
            notes.append(f"{name}: no autoscaler: no capacity within the SLO ({reason})")
            continue
        rule = minimums.get(name, 1)
        minimum = max(rule, entry.replicas)
        found = planned.models.get(name)
        peak = found.rps if found is not None else 0.0
        maximum = max(minimum, math.ceil(peak / cap.rps - 1e-9))
        in_flight = _in_flight(capacity, name, gpu, cap)
        out[name] = ReplicaSizing(name, cap, in_flight, peak, minimum, maximum)
        if rule > entry.replicas:
            notes.append(
                f"{name}: at least {minimum} replicas (a primary keeps two for availability; "
                f"the fleet says {entry.replicas})"
            )
    return out, notes
