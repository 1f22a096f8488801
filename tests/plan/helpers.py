"""Shared pieces of the planner's tests: fleets, and capacities from a table (memory stays real)
so the arithmetic can be checked by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelyard.fleet import LoadedFleet, Slo, load_fleet
from modelyard.placement import SharingMode
from modelyard.plan.capacity import Capacity, CapacityModel, Verdict
from modelyard.plan.cost import Pricing
from modelyard.plan.demand import Demand, demand_from_fleet, model_demands
from modelyard.plan.fits import MemoryFits
from modelyard.plan.options import PlanInputs, UnitBuilder
from modelyard.plan.planner import default_min_replicas
from modelyard.plan.simulator import PlanSimulator
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "fleet.yaml"
A10G = 1.006  # cheapest A10G price in the catalog (g5.xlarge), USD per GPU-hour

# The fleet: two models time-sliced on one H100 at 0.6/0.3, a coder on two L4s behind
# a task route that gets a fifth of the traffic.
THREE_MODELS = """\
name: three
models:
  llama-8b: {catalog: llama-3.1-8b, gpu: h100-sxm, max_model_len: 8192}
  mistral-7b: {catalog: mistral-7b-instruct-v0.2, gpu: h100-sxm, max_model_len: 8192}
  coder: {catalog: qwen2.5-7b, quant: awq-w4-g128, gpu: l4, replicas: 2, max_model_len: 4096}
placement:
  shared:
    - gpu: h100-sxm
      models: [llama-8b, mistral-7b]
      memory_fractions: {llama-8b: 0.6, mistral-7b: 0.3}
routes:
  - {match: {task: code}, targets: [coder, llama-8b]}
  - {targets: [llama-8b, mistral-7b]}
slo: {ttft_p99: 500ms, tpot_p99: 40ms}
traffic: {daily_active_users: 200000, requests_per_user: 10, peak_factor: 3, tasks: {code: 0.2}}
"""


@dataclass
class TableCapacity(CapacityModel):
    """Capacities looked up in `table`: ("isolated", model, gpu), ("shared", gpu) for a whole
    group (split by the mix; ("shared", gpu, model) when all traffic goes to one member),
    ("mig", model, gpu, profile). Missing entries: the SLO binds."""

    table: dict[tuple[str, ...], float] = field(default_factory=dict)

    def _look(self, key: tuple[str, ...]) -> Capacity:
        rps = self.table.get(key, 0.0)
        if rps > 0:
            return Capacity(rps, "table")
        return Capacity(0.0, "table", Verdict("slo", f"{'/'.join(key)}: not in the table"))

    def isolated(self, model: str, gpu: str, tensor_parallel: int, guess: float = 0.0) -> Capacity:
        return self._look(("isolated", model, gpu))

    def shared(
        self,
        gpu: str,
        sharing: SharingMode,
        fractions: dict[str, float],
        mix: dict[str, float],
        tensor_parallel: int,
        guess: float = 0.0,
    ) -> Capacity:
        if len(mix) == 1 and ("shared", gpu, *mix) in self.table:
            return self._look(("shared", gpu, *mix))
        return self._look(("shared", gpu))

    def mig_slice(self, model: str, gpu: str, profile: str, guess: float = 0.0) -> Capacity:
        return self._look(("mig", model, gpu, profile))


def table_capacity(loaded: LoadedFleet, table: dict[tuple[str, ...], float]) -> TableCapacity:
    return TableCapacity(
        loaded,
        loaded.fleet.slo,
        512,
        256,
        PlanSimulator(loaded),
        MemoryFits(loaded),
        table=table,
    )


def simulated_capacity(loaded: LoadedFleet, slo: Slo | None = None) -> CapacityModel:
    return CapacityModel(
        loaded,
        slo or loaded.fleet.slo,
        loaded.fleet.traffic.input_tokens,
        loaded.fleet.traffic.output_tokens,
        PlanSimulator(loaded),
        MemoryFits(loaded),
    )


def builder(
    capacity: CapacityModel,
    demand: Demand | None = None,
    pricing: Pricing | None = None,
    min_replicas: dict[str, int] | None = None,
) -> UnitBuilder:
    loaded = capacity.loaded
    demand = demand or demand_from_fleet(loaded.fleet)
    models = model_demands(loaded.fleet, demand)
    minimums = {**default_min_replicas(loaded, models), **(min_replicas or {})}
    return UnitBuilder(capacity, PlanInputs(demand, models, minimums, pricing or Pricing()))


def load(path: Path) -> LoadedFleet:
    return load_fleet(path)
