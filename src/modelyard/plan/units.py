"""A unit is what one replica of a placement is — one model on its GPU(s), a shared GPU, a MIG
GPU with its slices — and a sized unit says how many replicas it needs and what set that.

replicas = max(availability minimum, ceil(demand / capacity at the SLO)), and with --failover
enough for each fallback to absorb the traffic of the primary it backs up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from modelyard.placement import SharingMode
from modelyard.plan.capacity import Verdict

# what set a unit's replica count: traffic at the SLO capacity, the availability minimum, a
# fallback absorbing a failed primary's traffic, or the fleet file (the "as written" option)
Binding = Literal["SLO", "availability", "failover", "as written"]


@dataclass(frozen=True)
class EnginePlan:
    """One engine of a unit (with MIG: `slices` engines of this model on one profile)."""

    model: str
    memory_fraction: float
    tensor_parallel_size: int = 1
    mig_profile: str | None = None
    slices: int = 1


@dataclass
class UnitPlan:
    """Replicas of one unit. Capacities are per replica; demands are what all its replicas
    together serve of each model (requests/s at the peak)."""

    label: str
    gpu: str
    sharing: SharingMode
    engines: list[EnginePlan]
    gpus_per_replica: int
    replicas: int
    capacity_rps: dict[str, float]
    demand_rps: dict[str, float]
    source: str
    sized_by: list[Binding] = field(default_factory=list)
    verdict: Verdict = field(default_factory=Verdict)
    usd_per_gpu_hour: float | None = None
    gpu_equivalents: float = 0.0  # whole GPUs of this type its demand would keep busy alone
    # per replica, of a model taking over its primary's traffic (--failover): in a shared unit
    # the model alone at its fraction; elsewhere its capacity
    failover_capacity_rps: dict[str, float] = field(default_factory=dict)

    def takeover_rps(self, model: str) -> float:
        return self.failover_capacity_rps.get(model, self.capacity_rps.get(model, 0.0))

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(e.model for e in self.engines))


def replicas_needed(demand_rps: float, capacity_rps: float) -> int:
    if demand_rps <= 0:
        return 0
    return math.ceil(demand_rps / capacity_rps - 1e-9)


def size(
    demand_rps: float, capacity_rps: float, minimum: int, failover: list[tuple[float, float]]
) -> tuple[int, list[Binding]]:
    """Replicas and what set them. `failover`: (requests/s, capacity per replica) a fallback
    must serve while its primary is down."""
    for_traffic = replicas_needed(demand_rps, capacity_rps)
    for_failover = max((replicas_needed(n, c) for n, c in failover), default=0)
    replicas = max(for_traffic, minimum, for_failover)
    sized_by: list[Binding] = []
    if for_traffic == replicas and for_traffic > 0:
        sized_by.append("SLO")
    if minimum == replicas and minimum > 0:
        sized_by.append("availability")
    if for_failover == replicas and for_failover > max(for_traffic, minimum):
        sized_by.append("failover")
    return replicas, sized_by
