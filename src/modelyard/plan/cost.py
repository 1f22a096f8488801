"""Placement options and their cost: isolated, shared and MIG, replicas from demand and capacity,
GPUs and dollars; the cheapest option that meets the SLO, and why.

The arithmetic is plain: replicas = max(minimum for availability, ceil(demand / capacity)),
GPUs = replicas x GPUs per unit, $/month = GPUs x $/GPU-hour x (1 - discount) x 730 h.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from modelyard.catalog.mig import fits_on_one_gpu, mig_memory_gb
from modelyard.errors import UnknownNameError
from modelyard.names import unknown_name_message
from modelyard.plan.capacity import Capacity, CapacityModel, Demand, Roles
from modelyard.plan.errors import PlanError

HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class Pricing:
    cloud: str | None = None  # None: the cheapest price listed per GPU
    overrides: dict[str, float] = field(default_factory=dict)  # gpu -> USD per GPU-hour
    discount: float = 0.0  # reserved / committed-use / spot, as a fraction off on-demand

    def __post_init__(self) -> None:
        if not 0 <= self.discount < 1:
            raise PlanError(f"discount must be within [0, 1), got {self.discount:g}")
        for gpu, price in self.overrides.items():
            if price <= 0:
                raise PlanError(f"price for {gpu} must be > 0, got {price:g}")


@dataclass
class Unit:
    """Replicas of one model (or of one shared GPU) and what sized them."""

    models: list[str]
    device: str  # a10g, a100-80gb (shared), h100-sxm/3g.40gb + ...
    demand_rps: float
    capacity_rps: float
    capacity_source: str
    replicas: int
    binding: str  # SLO | availability | failover | memory
    gpus_per_replica: int = 1
    reason: str = ""

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica


@dataclass
class Option:
    name: str
    placement: str  # isolated | shared | mig
    gpu: str
    units: list[Unit]
    usd_per_gpu_hour: float | None
    feasible: bool
    reason: str = ""
    gpus: int = 0
    monthly_usd: float = math.inf
    usd_per_million_output_tokens: float = math.inf
    utilization: float = 0.0
    headroom: float = 0.0
    binding: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("monthly_usd", "usd_per_million_output_tokens"):
            if math.isinf(data[key]):
                data[key] = None
        return data


def gpu_price(capacity: CapacityModel, gpu: str, pricing: Pricing) -> float | None:
    if gpu in pricing.overrides:
        return pricing.overrides[gpu] * (1 - pricing.discount)
    price = capacity.loaded.catalog.gpu(gpu).price(pricing.cloud)
    return None if price is None else price.usd_per_gpu_hour * (1 - pricing.discount)


def check_pricing(capacity: CapacityModel, pricing: Pricing) -> None:
    catalog = capacity.loaded.catalog
    for gpu in pricing.overrides:
        if gpu not in catalog.gpus:
            raise UnknownNameError(unknown_name_message("GPU", gpu, catalog.gpus))
    if pricing.cloud is not None:
        clouds = {p.cloud for g in catalog.gpus.values() for p in g.prices}
        if pricing.cloud not in clouds:
            raise UnknownNameError(unknown_name_message("cloud", pricing.cloud, clouds))


def _replicas(demand: float, capacity: float, minimum: int) -> tuple[int, str]:
    needed = math.ceil(demand / capacity - 1e-9) if demand > 0 else 0
    if needed > minimum or (needed == minimum == 1):
        return needed, "SLO"
    if needed == minimum:
        return needed, "SLO, availability"  # both ask for the same count
    return minimum, "availability"


def _finish(option: Option, demand: Demand, price: float | None, gpus: int | None = None) -> Option:
    option.gpus = sum(u.gpus for u in option.units) if gpus is None else gpus
    bad = [u for u in option.units if u.binding == "memory" or u.capacity_rps <= 0]
    if bad:
        option.feasible = False
        option.reason = "; ".join(u.reason for u in bad if u.reason) or "no capacity"
        option.binding = "memory" if any("memory" in u.reason for u in bad) else "SLO"
        return option
    if price is None:
        option.feasible = False
        option.reason = f"no price for {option.gpu} on this cloud (give --price {option.gpu}=USD)"
        return option
    option.usd_per_gpu_hour = price
    option.monthly_usd = option.gpus * price * HOURS_PER_MONTH
    tokens = demand.average_rps * HOURS_PER_MONTH * 3600 * demand.output_tokens
    option.usd_per_million_output_tokens = (
        option.monthly_usd / (tokens / 1e6) if tokens > 0 else math.inf
    )
    served = sum(u.demand_rps for u in option.units)
    offered = sum(u.capacity_rps * u.replicas for u in option.units)
    option.utilization = served / offered if offered > 0 else 0.0
    option.headroom = 1 - option.utilization
    option.binding = ", ".join(sorted({b for u in option.units for b in u.binding.split(", ")}))
    return option


@dataclass(frozen=True)
class PlanInputs:
    demand: Demand
    roles: Roles
    min_replicas: dict[str, int]
    pricing: Pricing

    def model_demand(self) -> dict[str, float]:
        shares = self.roles.shares(self.demand.fallback_rate)
        return {m: self.demand.peak_rps * s for m, s in shares.items()}

    @property
    def served(self) -> list[str]:
        return [self.roles.primary, *self.roles.fallbacks]


def _sized(unit: Unit, cap: Capacity, inputs: PlanInputs, model: str) -> Unit:
    """Replicas for one model's unit: demand at the SLO capacity, the availability minimum,
    and in a failover scenario the fallback absorbing the whole peak."""
    if cap.feasible:
        unit.replicas, unit.binding = _replicas(
            unit.demand_rps, cap.rps, inputs.min_replicas[model]
        )
        if inputs.demand.failover and model in inputs.roles.fallbacks:
            failover, _ = _replicas(inputs.demand.peak_rps, cap.rps, 1)
            if failover > unit.replicas:
                unit.replicas, unit.binding = failover, "failover"
    return unit


def _isolated_unit(capacity: CapacityModel, inputs: PlanInputs, model: str, gpu: str) -> Unit:
    cap = capacity.isolated(model, gpu)
    need = inputs.model_demand().get(model, 0.0)
    unit = Unit([model], gpu, need, cap.rps, cap.source, 0, "memory", reason=cap.reason)
    return _sized(unit, cap, inputs, model)


def isolated_option(
    capacity: CapacityModel, inputs: PlanInputs, gpus: dict[str, str], name: str
) -> Option:
    """Each served model on its own GPUs (`gpus`: model -> GPU type)."""
    units = [_isolated_unit(capacity, inputs, m, gpus[m]) for m in inputs.served]
    types = sorted(set(gpus[m] for m in inputs.served))
    price = None
    if len(types) == 1:
        price = gpu_price(capacity, types[0], inputs.pricing)
    option = Option(name, "isolated", "+".join(types), units, None, True)
    if len(types) > 1:  # mixed GPU types: price each unit
        prices = [gpu_price(capacity, u.device, inputs.pricing) for u in units]
        if any(p is None for p in prices):
            option.feasible = False
            option.reason = "no price for one of the GPUs on this cloud"
            option.gpus = sum(u.gpus for u in units)
            return option
        total = sum(u.gpus * p for u, p in zip(units, prices, strict=True) if p is not None)
        gpus_total = sum(u.gpus for u in units)
        price = total / gpus_total if gpus_total else None
    return _finish(option, inputs.demand, price)


def shared_fractions(capacity: CapacityModel, gpu: str, inputs: PlanInputs) -> dict[str, float]:
    """Memory fractions for the served models on one GPU: the fleet's own group when it has
    one there, else each model's minimum plus the spare 0.9 split by traffic share."""
    fleet = capacity.loaded.fleet
    for group in fleet.shared_groups():
        if group.gpu == gpu and set(group.models) == set(inputs.served):
            return capacity.loaded.memory_fractions(group)
    spec = capacity.loaded.catalog.gpu(gpu)
    needs = {m: capacity.need_fraction(m, gpu, spec) for m in inputs.served}
    spare = 0.9 - sum(needs.values())
    if math.isinf(spare) or spare < 0:
        return needs  # does not fit: the capacity check says why
    shares = inputs.roles.shares(inputs.demand.fallback_rate)
    weights = {m: max(shares.get(m, 0.0), 0.1) for m in inputs.served}
    total = sum(weights.values())
    return {m: round(needs[m] + spare * weights[m] / total, 3) for m in inputs.served}


def shared_option(capacity: CapacityModel, inputs: PlanInputs, gpu: str) -> Option:
    """Every served model on each GPU; replicas of that GPU sized by the joint capacity."""
    spec = capacity.loaded.catalog.gpu(gpu)
    fractions = shared_fractions(capacity, gpu, inputs)
    name = f"shared {gpu}"
    label = " + ".join(inputs.served)
    missing = [m for m, f in fractions.items() if math.isinf(f)]
    problem = (
        f"memory: {', '.join(missing)} cannot fit on {gpu} ({spec.memory_gb:g} GB)"
        if missing
        else f"memory: {label} need fractions {sum(fractions.values()):.2f} of {gpu}"
        if sum(fractions.values()) > 0.95 + 1e-9
        else ""
    )
    if problem:
        unit = Unit(inputs.served, gpu, 0, 0, "memory", 0, "memory", reason=problem)
        return _finish(Option(name, "shared", gpu, [unit], None, True), inputs.demand, None)
    shares = inputs.roles.shares(inputs.demand.fallback_rate)
    mix = {m: s for m, s in shares.items() if s > 0} or {inputs.roles.primary: 1.0}
    cap = capacity.shared(gpu, fractions, mix)
    need = inputs.demand.peak_rps
    unit = Unit(inputs.served, gpu, need, cap.rps, cap.source, 0, "memory", reason=cap.reason)
    if cap.feasible:
        minimum = max(inputs.min_replicas[m] for m in inputs.served)
        unit.replicas, unit.binding = _replicas(need, cap.rps, minimum)
        if inputs.demand.failover and inputs.roles.fallbacks:
            fallback = inputs.roles.fallbacks[0]
            solo = capacity.isolated(fallback, gpu, fractions[fallback])
            failover = _replicas(need, solo.rps, 1)[0] if solo.feasible else math.inf
            if failover > unit.replicas:
                if math.isinf(failover):
                    unit.binding, unit.reason = "memory", solo.reason
                else:
                    unit.replicas, unit.binding = int(failover), "failover"
    unit.device = f"{gpu} ({', '.join(f'{m}={f:g}' for m, f in fractions.items())})"
    return _finish(
        Option(name, "shared", gpu, [unit], None, True),
        inputs.demand,
        gpu_price(capacity, gpu, inputs.pricing),
    )


def mig_option(capacity: CapacityModel, inputs: PlanInputs, gpu: str) -> Option | None:
    """Each served model on its smallest MIG slice that fits; one GPU holds one of each."""
    spec = capacity.loaded.catalog.gpu(gpu)
    if not spec.mig_profiles:
        return None
    by_size = sorted(spec.mig_profiles, key=mig_memory_gb)
    name = f"mig {gpu}"
    demand = inputs.model_demand()
    units: list[Unit] = []
    profiles: list[str] = []
    for model in inputs.served:
        need = demand.get(model, 0.0)
        chosen: tuple[str, Capacity] | None = None
        for profile in by_size:
            cap = capacity.mig(model, gpu, profile)
            if cap.feasible:
                chosen = (profile, cap)
                break
            if not cap.reason.startswith("memory"):
                chosen = (profile, cap)  # fits but misses the SLO: bigger slices may not
        if chosen is None:
            units.append(
                Unit(
                    [model],
                    f"{gpu}/-",
                    need,
                    0,
                    "memory",
                    0,
                    "memory",
                    reason=f"memory: {model} fits no MIG slice of {gpu}",
                )
            )
            continue
        profile, cap = chosen
        profiles.append(profile)
        unit = Unit(
            [model],
            f"{gpu}/{profile}",
            need,
            cap.rps,
            cap.source,
            0,
            "memory",
            reason=cap.reason,
            gpus_per_replica=0,
        )
        units.append(_sized(unit, cap, inputs, model))
    option = Option(name, "mig", gpu, units, None, True)
    if len(profiles) == len(inputs.served) and not fits_on_one_gpu(spec, profiles):
        option.feasible = False
        option.reason = f"slices {', '.join(profiles)} exceed one {gpu} (7 compute / 8 memory)"
        return option
    # one GPU holds one slice of each model: the GPU count is the largest replica count
    gpus = max((u.replicas for u in units), default=0)
    return _finish(option, inputs.demand, gpu_price(capacity, gpu, inputs.pricing), gpus)


def options_for(
    capacity: CapacityModel, inputs: PlanInputs, gpu_types: list[str], optimize: bool
) -> list[Option]:
    """Every option considered: the fleet's own GPUs, or (optimize) every GPU type."""
    fleet_gpus = {m: capacity.loaded.gpu_name(m) for m in inputs.served}
    options: list[Option] = []
    if all(fleet_gpus.values()) and not optimize:
        gpus = {m: str(g) for m, g in fleet_gpus.items()}
        options.append(isolated_option(capacity, inputs, gpus, "isolated (fleet's GPUs)"))
    for gpu in gpu_types:
        gpus = dict.fromkeys(inputs.served, gpu)
        options.append(isolated_option(capacity, inputs, gpus, f"isolated {gpu}"))
        if len(inputs.served) > 1:
            options.append(shared_option(capacity, inputs, gpu))
            mig = mig_option(capacity, inputs, gpu)
            if mig is not None:
                options.append(mig)
    if optimize:
        options.append(cheapest_mixed_isolated(capacity, inputs, gpu_types))
    return _dedupe(options)


def cheapest_mixed_isolated(
    capacity: CapacityModel, inputs: PlanInputs, gpu_types: list[str]
) -> Option:
    """Isolated with each model on its own cheapest GPU type (models are independent)."""
    best: dict[str, str] = {}
    for model in inputs.served:
        costs = []
        for gpu in gpu_types:
            unit = _isolated_unit(capacity, inputs, model, gpu)
            price = gpu_price(capacity, gpu, inputs.pricing)
            if unit.capacity_rps > 0 and price is not None:
                costs.append((unit.gpus * price, unit.gpus, gpu))
        best[model] = min(costs)[2] if costs else gpu_types[0]
    return isolated_option(capacity, inputs, best, "isolated (cheapest GPU per model)")


def _dedupe(options: list[Option]) -> list[Option]:
    seen: dict[tuple[str, ...], Option] = {}
    for option in options:
        key = (option.placement, *(f"{u.device}:{u.replicas}" for u in option.units))
        seen.setdefault(key, option)
    return list(seen.values())


def recommend(options: list[Option]) -> tuple[Option | None, str]:
    """The cheapest feasible option (fewer GPUs on a tie), and the reason in one sentence."""
    feasible = [o for o in options if o.feasible]
    if not feasible:
        reasons = "; ".join(f"{o.name}: {o.reason}" for o in options)
        return None, f"no option meets the SLO: {reasons}"
    ranked = sorted(feasible, key=lambda o: (o.monthly_usd, o.gpus, o.name))
    best = ranked[0]
    why = [
        f"{best.name} is the cheapest option that meets the SLO: {best.gpus} GPUs, "
        f"${best.monthly_usd:,.0f}/month"
    ]
    bound = {b for u in best.units for b in u.binding.split(", ")}
    if bound == {"availability"}:
        why.append("replica minimums for availability, not traffic, set its size")
    elif "SLO" in bound and "availability" in bound:
        why.append(
            "the SLO capacity at peak traffic sets its replica counts, where the availability "
            "minimums do not ask for more"
        )
    elif "SLO" in bound:
        why.append("the SLO capacity at peak traffic sets its replica counts")
    if "failover" in bound:
        why.append("the fallback is sized to absorb the primary's traffic")
    if len(ranked) > 1:
        nxt = ranked[1]
        why.append(f"next: {nxt.name} at ${nxt.monthly_usd:,.0f}/month")
    excluded = [o for o in options if not o.feasible]
    if excluded:
        why.append(
            "ruled out: " + "; ".join(f"{o.name} ({o.binding or 'price'})" for o in excluded)
        )
    return best, "; ".join(why)
