"""`modelyard plan`: demand -> options -> the cheapest that meets the SLO, and sweeps."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.fleet import LoadedFleet, Slo
from modelyard.plan.capacity import CapacityModel, Demand, Roles, measured_capacities, roles
from modelyard.plan.cost import Option, PlanInputs, Pricing, check_pricing, options_for, recommend
from modelyard.plan.errors import PlanError
from modelyard.sim.perf import Calibration

SCHEMA = "modelyard.plan/1"
SWEEPABLE = ("daily_active_users", "requests_per_user", "peak_factor", "fallback_rate")


@dataclass
class PlanResult:
    fleet: str
    demand: Demand
    roles: Roles
    slo: Slo
    options: list[Option]
    recommended: Option | None
    why: str
    simulations: int
    sweep: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        demand = self.demand
        return {
            "schema": SCHEMA,
            "fleet": self.fleet,
            "demand": {
                **demand.__dict__,
                "average_rps": demand.average_rps,
                "peak_rps": demand.peak_rps,
            },
            "roles": {"primary": self.roles.primary, "fallbacks": list(self.roles.fallbacks)},
            "slo": {
                "ttft_p99_s": self.slo.ttft_p99,
                "tpot_p99_s": self.slo.tpot_p99,
                "e2e_p99_s": self.slo.e2e_p99,
            },
            "options": [o.to_json() for o in self.options],
            "recommended": self.recommended.name if self.recommended else None,
            "why": self.why,
            "simulations": self.simulations,
            "sweep": self.sweep,
            "notes": self.notes,
        }


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """`daily_active_users=1e3..1e6` (log-spaced, 13 points) or `name=a,b,c`."""
    if "=" not in text:
        raise PlanError(f"--sweep {text}: expected NAME=LOW..HIGH or NAME=A,B,C")
    name, values = text.split("=", 1)
    name = name.strip().replace("-", "_")
    if name not in SWEEPABLE:
        raise PlanError(f"--sweep: cannot sweep '{name}' (choose one of {', '.join(SWEEPABLE)})")
    try:
        if ".." in values:
            low, high = (float(v) for v in values.split(".."))
            if not 0 < low < high:
                raise PlanError(f"--sweep {text}: need 0 < LOW < HIGH")
            points = list(np.geomspace(low, high, 13))
            if name == "fallback_rate":
                points = list(np.linspace(low, high, 11))
        else:
            points = [float(v) for v in values.split(",")]
    except ValueError as exc:
        raise PlanError(f"--sweep {text}: not numbers ({exc})") from exc
    return name, points


@dataclass(frozen=True)
class PlanRequest:
    demand: Demand
    slo: Slo
    pricing: Pricing
    min_replicas: dict[str, int]
    optimize: bool = False
    gpus: tuple[str, ...] = ()  # GPU types to consider (default: the fleet's, or all)
    capacity: dict[str, float] = field(default_factory=dict)
    measured: tuple[Path, ...] = ()
    calibrations: tuple[Calibration, ...] = ()
    sweep: tuple[str, list[float]] | None = None


def plan(
    loaded: LoadedFleet, request: PlanRequest, progress: Callable[[str], None] | None = None
) -> PlanResult:
    fleet = loaded.fleet
    if request.slo.ttft_p99 is None and request.slo.e2e_p99 is None:
        raise PlanError(
            "plan sizes for an SLO: set slo.ttft_p99 (or e2e_p99) in the fleet or pass "
            "--slo-ttft-ms (TPOT alone does not see queueing)"
        )
    model_roles = roles(fleet)
    capacity = CapacityModel(
        loaded,
        request.slo,
        request.demand.input_tokens,
        request.demand.output_tokens,
        given=request.capacity,
        measured=measured_capacities(list(request.measured), request.slo),
        calibrations=request.calibrations,
    )
    for key in request.capacity:
        model = key.split("@")[0]
        if model not in fleet.models:
            raise PlanError(f"--capacity {key}: '{model}' is not a model of the fleet")
        if request.capacity[key] <= 0:
            raise PlanError(f"--capacity {key}: must be > 0 requests/s")
    check_pricing(capacity, request.pricing)
    minimums = {
        m: request.min_replicas.get(m, 2 if m == model_roles.primary else 1) for m in fleet.models
    }
    for model, count in request.min_replicas.items():
        if model not in fleet.models:
            raise PlanError(f"--min-replicas {model}: not a model of the fleet")
        if count < 0:
            raise PlanError(f"--min-replicas {model}={count}: must be >= 0")
    if request.gpus:
        gpu_types = list(request.gpus)
    elif request.optimize:
        gpu_types = sorted(loaded.catalog.gpus)
    else:
        gpu_types = sorted({g for m in fleet.models if (g := loaded.gpu_name(m))})
    for gpu in gpu_types:
        loaded.catalog.gpu(gpu)  # unknown names fail here with did-you-mean
    if not gpu_types:
        raise PlanError("no GPU to plan for: give the fleet's models a `gpu:` or pass --gpu")

    def run(demand: Demand) -> tuple[list[Option], Option | None, str]:
        inputs = PlanInputs(demand, model_roles, minimums, request.pricing)
        if progress:
            progress(f"{demand.daily_active_users:,.0f} users")
        options = options_for(capacity, inputs, gpu_types, request.optimize)
        best, why = recommend(options)
        return options, best, why

    options, best, why = run(request.demand)
    notes = [f"{m}: no route sends it traffic; not planned" for m in model_roles.idle]
    sweep = None
    if request.sweep is not None:
        name, points = request.sweep
        rows = []
        for value in points:
            demand = replace(request.demand, **{name: value})  # type: ignore[arg-type]
            swept, chosen, _ = run(demand)
            cheapest: dict[str, float | None] = {}
            for placement in ("isolated", "shared", "mig"):
                costs = [o.monthly_usd for o in swept if o.placement == placement and o.feasible]
                cheapest[placement] = min(costs) if costs else None
            rows.append(
                {
                    "value": value,
                    "cheapest_usd_by_placement": cheapest,
                    "recommended": chosen.name if chosen else None,
                    "gpus": chosen.gpus if chosen else None,
                    "monthly_usd": chosen.monthly_usd if chosen else None,
                }
            )
        sweep = {"parameter": name, "points": rows}
    return PlanResult(
        fleet=fleet.name,
        demand=request.demand,
        roles=model_roles,
        slo=request.slo,
        options=options,
        recommended=best,
        why=why,
        simulations=capacity.simulations,
        sweep=sweep,
        notes=notes,
    )


def sweep_png(result: dict[str, Any], path: Path) -> Path:
    """Cost vs the swept parameter, one line per placement (log-log for counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = result["sweep"]
    name = sweep["parameter"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for placement, style in (("isolated", "o-"), ("shared", "s-"), ("mig", "^-")):
        xs = [
            p["value"]
            for p in sweep["points"]
            if p["cheapest_usd_by_placement"].get(placement) is not None
        ]
        ys = [
            p["cheapest_usd_by_placement"][placement]
            for p in sweep["points"]
            if p["cheapest_usd_by_placement"].get(placement) is not None
        ]
        if xs:
            ax.plot(xs, ys, style, label=placement, markersize=4)
    if name in ("daily_active_users", "requests_per_user"):
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(name.replace("_", " "))
    ax.set_ylabel("cheapest $/month meeting the SLO")
    ax.set_title(f"{result['fleet']}: cost vs {name.replace('_', ' ')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def fmt_money(value: float | None) -> str:
    return "—" if value is None or math.isinf(value) else f"${value:,.0f}"
