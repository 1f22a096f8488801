"""Options and their cost: GPUs, dollars, utilisation and headroom of a set of sized units.

$/month = sum over units of GPUs x $/GPU-hour x (1 - discount) x 730 h. GPU utilisation is
the option's work in whole GPUs (each model's demand over what one whole GPU of the unit's type
serves of it alone) over the GPUs it provisions, so idle slices and contention show; headroom
is the smallest spare share of capacity among the models with traffic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from modelyard.catalog import Catalog
from modelyard.errors import UnknownNameError
from modelyard.names import unknown_name_message
from modelyard.plan.capacity import Constraint, Verdict
from modelyard.plan.demand import Demand, FleetDemand
from modelyard.plan.errors import PlanError
from modelyard.plan.units import Binding, UnitPlan
from modelyard.units import HOURS_PER_MONTH

SECONDS_PER_HOUR = 3600

OptionKind = Literal["as written", "fleet layout", "isolated", "shared", "mig", "mixed"]
# the first blocking constraint names an option's verdict, in this order
PRECEDENCE: tuple[Constraint, ...] = (
    "memory",
    "placement",
    "slo",
    "layout",
    "capacity",
    "availability",
    "price",
    "dominated",
)


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

    def check(self, catalog: Catalog) -> None:
        for gpu in self.overrides:
            if gpu not in catalog.gpus:
                raise UnknownNameError(unknown_name_message("GPU", gpu, catalog.gpus))
        if self.cloud is not None:
            clouds = {p.cloud for g in catalog.gpus.values() for p in g.prices}
            if self.cloud not in clouds:
                raise UnknownNameError(unknown_name_message("cloud", self.cloud, clouds))

    def per_gpu_hour(self, catalog: Catalog, gpu: str) -> float | None:
        """USD per GPU-hour after the discount, or None when the cloud lists no price."""
        if gpu in self.overrides:
            return self.overrides[gpu] * (1 - self.discount)
        price = catalog.gpu(gpu).price(self.cloud)
        return None if price is None else price.usd_per_gpu_hour * (1 - self.discount)


@dataclass
class Option:
    """One way to serve every planned model, sized, with its verdict and cost."""

    name: str
    kind: OptionKind
    units: list[UnitPlan]
    verdict: Verdict = field(default_factory=Verdict)
    gpus: int = 0
    monthly_usd: float = math.inf
    usd_per_million_output_tokens: float = math.inf
    gpu_utilization: float = 0.0
    headroom: float = 0.0
    notes: list[str] = field(default_factory=list)
    cost_floor_usd: float | None = None  # dominated: $/month its replica minimums cost at least

    @property
    def feasible(self) -> bool:
        return self.verdict.feasible

    @property
    def sized_by(self) -> list[Binding]:
        """What set its replica counts (nothing for an option that cannot meet the SLO)."""
        if not self.feasible and self.kind != "as written":
            return []
        found = {b for u in self.units for b in u.sized_by}
        order: tuple[Binding, ...] = ("as written", "SLO", "availability", "failover")
        return [b for b in order if b in found]

    def key(self) -> tuple[str, ...]:
        """What makes two options the same fleet (for dropping repeats)."""
        return tuple(sorted(f"{u.label}:{u.replicas}" for u in self.units))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["feasible"] = self.feasible
        data["sized_by"] = self.sized_by
        for name in ("monthly_usd", "usd_per_million_output_tokens"):
            if math.isinf(data[name]):
                data[name] = None
        for unit, plan in zip(data["units"], self.units, strict=True):
            unit["gpus"] = plan.gpus
        return data


def finish(
    option: Option, demand: Demand, models: FleetDemand, catalog: Catalog, pricing: Pricing
) -> Option:
    """The option's GPUs, verdict, cost, utilisation and headroom from its sized units."""
    option.gpus = sum(u.gpus for u in option.units)
    blocked = [option.verdict] if not option.verdict.feasible else []
    blocked += [u.verdict for u in option.units if not u.verdict.feasible]
    for unit in option.units:
        unit.usd_per_gpu_hour = pricing.per_gpu_hour(catalog, unit.gpu)
    unpriced = sorted({u.gpu for u in option.units if u.usd_per_gpu_hour is None and u.gpus})
    if unpriced:
        names = ", ".join(unpriced)
        hint = " ".join(f"--price {g}=USD" for g in unpriced)
        blocked.append(Verdict("price", f"no price for {names} on this cloud (give {hint})"))
    if blocked:
        first = min(blocked, key=lambda v: PRECEDENCE.index(v.blocked_by or "price"))
        reasons = "; ".join(dict.fromkeys(v.reason for v in blocked if v.reason))
        option.verdict = Verdict(first.blocked_by, reasons)
    option.monthly_usd = sum(
        u.gpus * (u.usd_per_gpu_hour or 0.0) * HOURS_PER_MONTH for u in option.units
    )
    if unpriced:
        option.monthly_usd = math.inf
    tokens = demand.average_rps * HOURS_PER_MONTH * SECONDS_PER_HOUR * demand.traffic.output_tokens
    if tokens > 0 and not math.isinf(option.monthly_usd):
        option.usd_per_million_output_tokens = option.monthly_usd / (tokens / 1e6)
    if option.gpus:
        option.gpu_utilization = sum(u.gpu_equivalents for u in option.units) / option.gpus
    option.headroom = _headroom(option.units, models)
    return option


def _headroom(units: list[UnitPlan], models: FleetDemand) -> float:
    spare = []
    for name, model in models.models.items():
        if model.rps <= 0:
            continue
        offered = sum(u.capacity_rps.get(name, 0.0) * u.replicas for u in units)
        spare.append(1 - model.rps / offered if offered > 0 else 0.0)
    return min(spare, default=0.0)
