"""Demand and capacity: how many requests per second each model must serve at the daily peak,
and how many one GPU (or MIG slice, or shared GPU) can serve within the SLO.

Capacity comes from the best source available, always stated: a measured `modelyard bench`
result, an explicit number, or the simulator (the highest Poisson rate whose p99s meet the SLO).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard import results
from modelyard.catalog import GpuSpec
from modelyard.catalog.mig import mig_gpu
from modelyard.fleet import (
    Fleet,
    FleetModel,
    LoadedFleet,
    SharedGroup,
    SharedPlacement,
    Slo,
)
from modelyard.memory import Device, fit_model
from modelyard.plan.errors import PlanError
from modelyard.sim.errors import SimError
from modelyard.sim.perf import Calibration, calibration_for
from modelyard.sim.run import SimOptions, SimResult, simulate
from modelyard.workload import LengthDist

SECONDS_PER_DAY = 86_400
COARSE_BASE_RPS = 0.05  # the search grid: 0.05 x 2^k, then 14 steps per doubling (~5%)
FINE_STEPS = 14
MAX_DOUBLINGS = 22


@dataclass(frozen=True)
class Demand:
    daily_active_users: float
    requests_per_user: float
    peak_factor: float
    fallback_rate: float
    input_tokens: int
    output_tokens: int
    failover: bool = False

    def __post_init__(self) -> None:
        if self.daily_active_users < 0:
            raise PlanError(f"daily active users must be >= 0, got {self.daily_active_users:g}")
        if self.requests_per_user < 0:
            raise PlanError(f"requests per user must be >= 0, got {self.requests_per_user:g}")
        if self.peak_factor < 1:
            raise PlanError(f"peak factor (peak / average) must be >= 1, got {self.peak_factor:g}")
        if not 0 <= self.fallback_rate <= 1:
            raise PlanError(f"fallback rate must be within [0, 1], got {self.fallback_rate:g}")
        if self.input_tokens < 1 or self.output_tokens < 1:
            raise PlanError("input and output tokens must be >= 1")

    @property
    def average_rps(self) -> float:
        return self.daily_active_users * self.requests_per_user / SECONDS_PER_DAY

    @property
    def peak_rps(self) -> float:
        return self.average_rps * self.peak_factor


def demand_from_fleet(fleet: Fleet, **overrides: float | bool | None) -> Demand:
    traffic = fleet.traffic
    values: dict[str, float | bool] = {
        "daily_active_users": traffic.daily_active_users,
        "requests_per_user": traffic.requests_per_user,
        "peak_factor": traffic.peak_factor,
        "fallback_rate": traffic.fallback_rate,
        "input_tokens": traffic.input_tokens,
        "output_tokens": traffic.output_tokens,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Demand(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Roles:
    primary: str
    fallbacks: tuple[str, ...]
    idle: tuple[str, ...]  # models no route sends traffic to in this plan

    def shares(self, fallback_rate: float) -> dict[str, float]:
        """Each model's share of requests: primary 1 - fallback_rate, the first fallback the
        rest (the gateway sends a request to a fallback only when the primary fails)."""
        if not self.fallbacks:
            return {self.primary: 1.0}
        return {self.primary: 1.0 - fallback_rate, self.fallbacks[0]: fallback_rate}


def roles(fleet: Fleet) -> Roles:
    route = fleet.default_route() or (fleet.routes[0] if fleet.routes else None)
    order = list(route.targets) if route else list(fleet.models)
    primary, fallbacks = order[0], tuple(order[1:2])
    idle = tuple(m for m in fleet.models if m != primary and m not in fallbacks)
    return Roles(primary, fallbacks, idle)


@dataclass(frozen=True)
class Capacity:
    """Requests per second one unit serves within the SLO (0 with `reason` when it cannot)."""

    rps: float
    source: str
    reason: str = ""
    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    e2e_mean_ms: float | None = None  # at `rps`: with it, the in-flight requests it holds

    @property
    def feasible(self) -> bool:
        return self.rps > 0


def measured_capacities(paths: list[Path], slo: Slo) -> dict[str, tuple[float, str]]:
    """Per model: the highest measured throughput among runs whose p99s met the SLO with no
    errors (a rate sweep gives one file per level)."""
    best: dict[str, tuple[float, str]] = {}
    for path in paths:
        data = results.read_bench(path).model_dump(by_alias=True)
        for model, summary in data["models"].items():
            errors = sum((summary.get("errors") or {}).values())
            ok = errors == 0 and summary.get("completed", 0) > 0
            for key, limit in (("ttft_ms", slo.ttft_p99), ("tpot_ms", slo.tpot_p99)):
                if limit is not None:
                    p99 = (summary.get(key) or {}).get("p99")
                    ok = ok and p99 is not None and p99 <= limit * 1000
            if slo.e2e_p99 is not None:
                ok = ok and (summary.get("e2e_ms") or {}).get("p99", math.inf) <= slo.e2e_p99 * 1000
            rps = float(summary.get("throughput_rps", 0.0))
            if ok and rps > best.get(model, (0.0, ""))[0]:
                best[model] = (rps, f"measured ({path.name})")
    return best


def measured_token_means(path: Path) -> tuple[int, int]:
    """Mean prompt and output tokens of a bench run's workload (uniform: the middle)."""
    data = results.read_bench(path).model_dump(by_alias=True)

    def mean(dist: dict[str, Any]) -> int:
        if dist.get("kind") == "uniform" and dist.get("high") is not None:
            return max(round((float(dist["low"]) + float(dist["high"])) / 2), 1)
        return max(round(float(dist["mean"])), 1)

    try:
        workload = data["config"]["workload"]
        return mean(workload["input_tokens"]), mean(workload["output_tokens"])
    except (KeyError, TypeError) as exc:
        raise PlanError(f"{path}: no workload token lengths in its config ({exc})") from exc


def highest_passing(passes: Callable[[float], bool]) -> float:
    """The highest rate on a fixed grid that passes: doubling from 0.05 req/s, then bisection
    over 14 steps per doubling. Deterministic, and never lower for a looser test (a rate that
    passes a tighter SLO passes a looser one), so a tighter SLO never yields more capacity."""
    if not passes(COARSE_BASE_RPS):
        return 0.0
    k = 0
    while k < MAX_DOUBLINGS and passes(COARSE_BASE_RPS * 2 ** (k + 1)):
        k += 1
    low = COARSE_BASE_RPS * 2**k
    lo, hi = 0, FINE_STEPS  # fine index j: low * 2^(j/14); j = 0 passed, j = 14 failed
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(low * 2 ** (mid / FINE_STEPS)):
            lo = mid
        else:
            hi = mid
    return float(low * 2 ** (lo / FINE_STEPS))


@dataclass
class CapacityModel:
    """Capacities of every unit the planner considers, computed once and cached."""

    loaded: LoadedFleet
    slo: Slo
    input_tokens: int
    output_tokens: int
    given: dict[str, float] = field(default_factory=dict)  # model or model@gpu -> rps
    measured: dict[str, tuple[float, str]] = field(default_factory=dict)
    calibrations: tuple[Calibration, ...] = ()
    seed: int = 0
    simulations: int = 0
    _cache: dict[tuple[object, ...], Capacity] = field(default_factory=dict)

    # --- sources ---

    def _explicit(self, model: str, gpu: str) -> Capacity | None:
        for key in (f"{model}@{gpu}", model):
            if key in self.given and (key != model or gpu == self.loaded.gpu_name(model)):
                return Capacity(self.given[key], "given (--capacity)")
        if model in self.measured and gpu == self.loaded.gpu_name(model):
            rps, source = self.measured[model]
            return Capacity(rps, source)
        return None

    # --- memory ---

    def fits(self, model: str, gpu_name: str, gpu: GpuSpec, fraction: float) -> tuple[bool, str]:
        result = fit_model(self.loaded, model, Device.from_gpu(gpu_name, gpu), fraction)
        return result.fits, result.reason

    def need_fraction(self, model: str, gpu_name: str, gpu: GpuSpec) -> float:
        """The smallest memory fraction (to 0.01) at which the model fits, or inf."""
        for hundredths in range(5, 96):
            if self.fits(model, gpu_name, gpu, hundredths / 100)[0]:
                return hundredths / 100
        return math.inf

    # --- simulation ---

    def _sub_fleet(
        self,
        members: dict[str, str],
        fractions: dict[str, float],
        shared: bool,
        catalog_gpus: dict[str, GpuSpec] | None = None,
    ) -> LoadedFleet:
        fleet = self.loaded.fleet
        models: dict[str, FleetModel] = {
            name: fleet.models[name].model_copy(
                update={
                    "gpu": gpu,
                    "replicas": 1,
                    "gpu_memory_utilization": fractions[name],
                    "endpoints": [],
                }
            )
            for name, gpu in members.items()
        }
        gpu_names = set(members.values())
        placement: SharedPlacement | str = "isolated"
        if shared:
            placement = SharedPlacement(
                shared=[
                    SharedGroup(
                        gpu=gpu_names.pop(),
                        models=list(members),
                        memory_limit=min(sum(fractions.values()), 1.0),
                        memory_fractions=fractions,
                    )
                ]
            )
        sub = fleet.model_copy(
            update={"models": models, "placement": placement, "routes": [], "slo": self.slo}
        )
        catalog = self.loaded.catalog
        if catalog_gpus:
            catalog = type(catalog)(
                models=catalog.models,
                gpus={**catalog.gpus, **catalog_gpus},
                quants=catalog.quants,
                aliases=catalog.aliases,
                sources=catalog.sources,
            )
        return LoadedFleet(fleet=sub, catalog=catalog, path=self.loaded.path)

    def _run(
        self,
        sub: LoadedFleet,
        rate: float,
        mix: dict[str, float],
        calibrations: tuple[Calibration, ...],
    ) -> SimResult:
        self.simulations += 1
        requests = int(min(max(400, rate * 180), 3000))
        return simulate(
            sub,
            SimOptions(
                placement="fleet",
                rate=rate,
                requests=requests,
                input_tokens=LengthDist(mean=self.input_tokens),
                output_tokens=LengthDist(mean=self.output_tokens),
                mix=mix,
                seed=self.seed,
                calibrations=calibrations,
            ),
        )

    def _meets(self, result: SimResult, rate: float, mix: dict[str, float]) -> bool:
        total = sum(mix.values())
        for model in result.models:
            share = mix.get(model.name, 0.0) / total
            if share == 0 or model.requests == 0:
                continue
            if model.rejected or model.completed < model.requests:
                return False
            for limit, values in (
                (self.slo.ttft_p99, model.ttft_ms),
                (self.slo.tpot_p99, model.tpot_ms),
                (self.slo.e2e_p99, model.e2e_ms),
            ):
                if limit is not None and not values.get("p99", math.inf) <= limit * 1000:
                    return False
        return True

    def _search(
        self,
        sub: LoadedFleet,
        mix: dict[str, float],
        calibrations: tuple[Calibration, ...],
        what: str,
    ) -> Capacity:
        try:
            rps = highest_passing(
                lambda r: self._meets(self._run(sub, r, mix, calibrations), r, mix)
            )
        except SimError as exc:
            return Capacity(0.0, "simulated", f"memory: {exc}")
        if rps > 0:
            at = self._run(sub, rps, mix, calibrations)
            worst = max(at.models, key=lambda m: m.ttft_ms.get("p99", 0.0))
            return Capacity(
                rps,
                "simulated",
                ttft_p99_ms=worst.ttft_ms["p99"],
                tpot_p99_ms=worst.tpot_ms["p99"],
                e2e_mean_ms=worst.e2e_ms["mean"],
            )
        # fails even at the lowest rate: is the SLO below the latency floor?
        floor = self._run(sub, 0.001, mix, calibrations)
        problems = []
        for model in floor.models:
            if model.requests == 0:
                continue
            for label, limit, values in (
                ("TTFT", self.slo.ttft_p99, model.ttft_ms),
                ("TPOT", self.slo.tpot_p99, model.tpot_ms),
                ("E2E", self.slo.e2e_p99, model.e2e_ms),
            ):
                if limit is not None and values["p99"] > limit * 1000:
                    problems.append(
                        f"{model.name} {label} p99 is {values['p99']:.0f} ms even at zero load "
                        f"> SLO {limit * 1000:.0f} ms"
                    )
        reason = "; ".join(problems) or f"{what}: below {COARSE_BASE_RPS} req/s within the SLO"
        return Capacity(0.0, "simulated", f"SLO impossible: {reason}" if problems else reason)

    # --- units ---

    def isolated(self, model: str, gpu_name: str, fraction: float = 0.9) -> Capacity:
        key: tuple[object, ...] = ("isolated", model, gpu_name, round(fraction, 3))
        if key in self._cache:
            return self._cache[key]
        gpu = self.loaded.catalog.gpu(gpu_name)
        explicit = self._explicit(model, gpu_name) if fraction == 0.9 else None
        fits, reason = self.fits(model, gpu_name, gpu, fraction)
        if not fits:
            capacity = Capacity(0.0, "memory", f"memory: {model} on {gpu_name}: {reason}")
        elif explicit is not None:
            capacity = explicit
        else:
            sub = self._sub_fleet({model: gpu_name}, {model: fraction}, shared=False)
            capacity = self._search(sub, {model: 1.0}, self.calibrations, f"{model} on {gpu_name}")
        self._cache[key] = capacity
        return capacity

    def shared(self, gpu_name: str, fractions: dict[str, float], mix: dict[str, float]) -> Capacity:
        """Total requests per second one GPU shared by the models serves at this mix."""
        key: tuple[object, ...] = (
            "shared",
            gpu_name,
            tuple(sorted((m, round(f, 3)) for m, f in fractions.items())),
            tuple(sorted((m, round(s, 6)) for m, s in mix.items())),
        )
        if key in self._cache:
            return self._cache[key]
        gpu = self.loaded.catalog.gpu(gpu_name)
        problems = []
        for model, fraction in fractions.items():
            fits, reason = self.fits(model, gpu_name, gpu, fraction)
            if not fits:
                problems.append(f"{model} at fraction {fraction:.2f}: {reason}")
        if problems:
            capacity = Capacity(0.0, "memory", f"memory on {gpu_name}: " + "; ".join(problems))
        else:
            members = dict.fromkeys(fractions, gpu_name)
            sub = self._sub_fleet(members, fractions, shared=True)
            capacity = self._search(sub, mix, self.calibrations, f"shared {gpu_name}")
        self._cache[key] = capacity
        return capacity

    def mig(self, model: str, gpu_name: str, profile: str) -> Capacity:
        key: tuple[object, ...] = ("mig", model, gpu_name, profile)
        if key in self._cache:
            return self._cache[key]
        parent = self.loaded.catalog.gpu(gpu_name)
        slice_name = f"{gpu_name}/{profile}"
        gpu = mig_gpu(parent, profile)
        fits, reason = self.fits(model, slice_name, gpu, 0.9)
        if not fits:
            capacity = Capacity(0.0, "memory", f"memory: {model} on {slice_name}: {reason}")
        else:
            calibration = calibration_for(gpu_name, list(self.calibrations))
            derived = calibration.model_copy(update={"devices": [slice_name]})
            sub = self._sub_fleet({model: slice_name}, {model: 0.9}, False, {slice_name: gpu})
            capacity = self._search(
                sub, {model: 1.0}, (derived, *self.calibrations), f"{model} on {slice_name}"
            )
        self._cache[key] = capacity
        return capacity
