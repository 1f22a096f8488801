"""`modelyard plan`: demand -> the fleet as written, then the searched options -> the cheapest
that meets the SLO, why, and (when none does) what binds per model; cost sweeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.fleet import LoadedFleet, Slo
from modelyard.plan.capacity import CapacityModel
from modelyard.plan.cost import Option, Pricing
from modelyard.plan.demand import Demand, FleetDemand, model_demands
from modelyard.plan.errors import PlanError
from modelyard.plan.fits import MemoryFits
from modelyard.plan.measured import measured_capacities
from modelyard.plan.options import PlanInputs, UnitBuilder
from modelyard.plan.recommend import diagnose, recommend
from modelyard.plan.search import options_for
from modelyard.plan.simulator import PlanSimulator
from modelyard.plan.sweep import sweep_rows
from modelyard.sim.perf import Calibration
from modelyard.traffic import route_shares

SCHEMA = "modelyard.plan/2"


@dataclass(frozen=True)
class PlanRequest:
    demand: Demand
    slo: Slo
    pricing: Pricing
    min_replicas: dict[str, int] = field(default_factory=dict)
    optimize: bool = False
    gpus: tuple[str, ...] = ()  # GPU types to consider (default: the fleet's, or all)
    capacity: dict[str, float] = field(default_factory=dict)
    measured: tuple[Path, ...] = ()
    calibrations: tuple[Calibration, ...] = ()
    seed: int = 0
    sweep: tuple[str, list[float]] | None = None


@dataclass
class PlanResult:
    fleet: str
    demand: Demand
    models: FleetDemand
    slo: Slo
    options: list[Option]
    recommended: Option | None
    why: str
    diagnosis: list[str]
    simulations: int
    memory_fits: int
    sweep: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "fleet": self.fleet,
            "demand": self.demand.to_json(),
            "models": {
                name: {
                    "share": m.share,
                    "demand_rps": m.rps,
                    "failover_rps": m.failover_rps,
                    "standby": m.standby,
                }
                for name, m in self.models.models.items()
            },
            "slo": {
                "ttft_p99_s": self.slo.ttft_p99,
                "tpot_p99_s": self.slo.tpot_p99,
                "e2e_p99_s": self.slo.e2e_p99,
            },
            "options": [o.to_json() for o in self.options],
            "recommended": self.recommended.name if self.recommended else None,
            "why": self.why,
            "diagnosis": self.diagnosis,
            "simulations": self.simulations,
            "memory_fits": self.memory_fits,
            "sweep": self.sweep,
            "notes": self.notes,
        }


def _ranking_warning(
    simulator: PlanSimulator, options: list[Option], best: Option | None
) -> list[str]:
    """A warning when the recommendation and the next cheapest option could swap within
    their error bands (each option's: the widest of the simulations its engines used)."""
    others = sorted(
        (o for o in options if o.feasible and o is not best), key=lambda o: o.monthly_usd
    )
    if best is None or not others:
        return []
    runner_up = others[0]

    def band(option: Option) -> float:
        return simulator.band_of((e.model, u.gpu) for u in option.units for e in u.engines)

    low, high = band(best), band(runner_up)
    if not simulator.may_flip(best.monthly_usd, runner_up.monthly_usd, low, high):
        return []
    bands = (
        f"the simulator's +-{low:.0%}"
        if round(low, 2) == round(high, 2)
        else f"their simulated figures' +-{low:.0%} and +-{high:.0%}"
    )
    return [
        f"the ranking may flip: {best.name} (${best.monthly_usd:,.0f}/month) and "
        f"{runner_up.name} (${runner_up.monthly_usd:,.0f}) are within {bands}; measure both "
        "(modelyard bench) before choosing"
    ]


def default_min_replicas(loaded: LoadedFleet, models: FleetDemand) -> dict[str, int]:
    """2 for a model that is the first target of a route with traffic (a primary), else 1."""
    primaries = {r.route.targets[0] for r in route_shares(loaded.fleet) if r.share > 0}
    if not loaded.fleet.routes:
        primaries = set(models.planned)
    return {m: 2 if m in primaries and models.models[m].share > 0 else 1 for m in models.planned}


def _check(loaded: LoadedFleet, request: PlanRequest) -> list[str]:
    fleet = loaded.fleet
    if request.slo.ttft_p99 is None and request.slo.e2e_p99 is None:
        raise PlanError(
            "plan sizes for an SLO: set slo.ttft_p99 (or e2e_p99) in the fleet or pass "
            "--slo-ttft-ms (TPOT alone does not see queueing)"
        )
    for key, rps in request.capacity.items():
        model = key.split("@")[0]
        if model not in fleet.models:
            raise PlanError(f"--capacity {key}: '{model}' is not a model of the fleet")
        if rps <= 0:
            raise PlanError(f"--capacity {key}: must be > 0 requests/s")
        if "@" in key:
            loaded.catalog.gpu(key.split("@", 1)[1])
    for model, count in request.min_replicas.items():
        if model not in fleet.models:
            raise PlanError(f"--min-replicas {model}: not a model of the fleet")
        if count < 0:
            raise PlanError(f"--min-replicas {model}={count}: must be >= 0")
    request.pricing.check(loaded.catalog)
    if request.gpus:
        gpu_types = list(dict.fromkeys(request.gpus))
    elif request.optimize:
        gpu_types = sorted(loaded.catalog.gpus)
    else:
        gpu_types = sorted({g for m in fleet.models if (g := loaded.gpu_name(m))})
    for gpu in gpu_types:
        loaded.catalog.gpu(gpu)  # unknown names fail here with did-you-mean
    if not gpu_types:
        raise PlanError("no GPU to plan for: give the fleet's models a `gpu:` or pass --gpu")
    return gpu_types


def plan(
    loaded: LoadedFleet, request: PlanRequest, progress: Callable[[str], None] | None = None
) -> PlanResult:
    gpu_types = _check(loaded, request)
    simulator = PlanSimulator(loaded, request.calibrations)
    fits = MemoryFits(loaded)
    capacity = CapacityModel(
        loaded,
        request.slo,
        request.demand.traffic.input_tokens,
        request.demand.traffic.output_tokens,
        simulator,
        fits,
        given=request.capacity,
        measured=measured_capacities(list(request.measured), request.slo),
        seed=request.seed,
    )

    def run(demand: Demand) -> tuple[FleetDemand, list[Option], Option | None, str]:
        models = model_demands(loaded.fleet, demand)
        minimums = {**default_min_replicas(loaded, models), **request.min_replicas}
        builder = UnitBuilder(capacity, PlanInputs(demand, models, minimums, request.pricing))
        prune = request.optimize and request.sweep is None
        options = options_for(builder, gpu_types, request.optimize, prune, progress)
        best, why = recommend(options)
        return models, options, best, why

    models, options, best, why = run(request.demand)
    notes = list(models.notes)
    notes += [
        f"--measured {model}: not used, the fleet shares its GPU (bench measured it shared)"
        for model in capacity.measured
        if loaded.fleet.group_of(model) is not None
    ]
    notes += simulator.accuracy_notes()
    notes += _ranking_warning(simulator, options, best)
    sweep = None
    if request.sweep is not None:
        name, points = request.sweep
        sweep = {"parameter": name, "points": sweep_rows(run, request.demand, name, points)}
    return PlanResult(
        fleet=loaded.fleet.name,
        demand=request.demand,
        models=models,
        slo=request.slo,
        options=options,
        recommended=best,
        why=why,
        diagnosis=diagnose(options, models) if best is None else [],
        simulations=simulator.simulations,
        memory_fits=fits.fits,
        sweep=sweep,
        notes=notes,
    )
